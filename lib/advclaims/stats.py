"""Statistics with uncertainty, the claims' hypothesis tests, and the verdict rule.

Every statistic a claim checks is an ``Estimate``: a value and a bootstrap confidence interval
over images (scipy.stats.bootstrap, BCa by default), which keeps its bootstrap distribution
(``replicates``). Several training seeds pool into one Estimate by a hierarchical bootstrap
(``pool``): resample the seeds, then for each drawn seed one of its image resamples; so the pooled
interval carries the variance of training and of the method's own random draws as well as that of
the evaluation images. The verdict rule of docs/claims.md: reproduced when the interval lies wholly on
the claimed side of the threshold, contradicted when it lies wholly on the other side,
inconclusive otherwise.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 2000
# Resampled values held at once by one bootstrap call: scipy draws an (n_resamples, n) index matrix per sample,
# which for LP-13's kernel bootstrap at the paper width (about 1.2 million kernels) is 19 GiB; in batches of
# this many values it is 128 MiB per sample. Batching changes no number (the same generator, in the same order).
BOOTSTRAP_BATCH_VALUES = 2 ** 24


class Unmeasurable(ValueError):
    """The data do not allow the statistic (too few values, an empty group, no boundary points). The message
    says which and why in one line; the claim instance is then inconclusive with that reason, not an error."""


class Verdict(str, enum.Enum):
    REPRODUCED = "reproduced"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Estimate:
    """A statistic with its confidence interval; ``n`` is the number of resampled units."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE
    method: str = "bootstrap"
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False)  # the bootstrap distribution
    per_seed: tuple["Estimate", ...] = field(default=(), repr=False, compare=False)  # what a pooled one pooled
    uninformative: str | None = None  # why the statistic cannot go either way (e.g. saturated): never decides

    def __post_init__(self):
        if not (self.low <= self.value <= self.high) and all(map(math.isfinite, (self.low, self.value, self.high))):
            # BCa can put the point estimate outside the interval for skewed statistics; widen honestly
            object.__setattr__(self, "low", min(self.low, self.value))
            object.__setattr__(self, "high", max(self.high, self.value))

    @property
    def finite(self) -> bool:
        return all(map(math.isfinite, (self.value, self.low, self.high)))

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("value", "low", "high", "n", "confidence", "method", "uninformative")}
        if self.per_seed:
            out["per_seed"] = [{k: getattr(e, k) for k in ("value", "low", "high", "n")} for e in self.per_seed]
        return out

    def shifted(self, by: float) -> "Estimate":
        """The estimate of (statistic - by): a comparison with a fixed reference such as chance."""
        return replace(self, value=self.value - by, low=self.low - by, high=self.high - by,
                       replicates=None if self.replicates is None else self.replicates - by,
                       per_seed=tuple(e.shifted(by) for e in self.per_seed))

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _as_arrays(samples) -> list[np.ndarray]:
    arrays = [np.asarray(getattr(s, "detach", lambda: s)().cpu().numpy() if hasattr(s, "cpu") else s, dtype=float)
              for s in samples]
    for a in arrays:
        if a.ndim != 1:
            raise ValueError(f"bootstrap needs 1-D samples, got shape {a.shape}")
        if len(a) < 2:
            raise Unmeasurable(f"a sample of {len(a)} value{'s' * (len(a) != 1)}: an interval needs at least 2 "
                               f"(an empty group or too few images at this budget)")
        if not np.all(np.isfinite(a)):
            raise ValueError("a sample holds NaN or inf; the measurement upstream is broken (diverged model?)")
    return arrays


def bootstrap(statistic: Callable[..., float], *samples, paired: bool = True, confidence: float = CONFIDENCE,
              n_resamples: int = N_RESAMPLES, seed: int = 0, method: str = "BCa") -> Estimate:
    """Point value and bootstrap interval of ``statistic(*samples)``.

    ``paired=True`` resamples the same indices in every sample (measurements on the same images).
    Degenerate data (every resample gives the same value) yields a zero-width interval.
    """
    arrays = _as_arrays(samples)
    if paired and len({len(a) for a in arrays}) != 1:
        raise ValueError("paired samples must have the same length")
    value = float(statistic(*arrays))
    if np.ptp(np.concatenate(arrays)) == 0:
        return Estimate(value, value, value, len(arrays[0]), confidence, "degenerate", np.full(1, value),
                        uninformative=f"every one of the {len(arrays[0])} units gives the same value (saturated)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on BCa's degenerate cases; we fall back below
        batch = max(1, min(n_resamples, BOOTSTRAP_BATCH_VALUES // max(len(a) for a in arrays)))
        res = sps.bootstrap(tuple(arrays), lambda *a, axis=-1: statistic(*a, axis=axis), paired=paired,
                            vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                            method=method, random_state=np.random.default_rng(seed), batch=batch)
        low, high = res.confidence_interval
        if not (math.isfinite(low) and math.isfinite(high)) and method != "percentile":
            res = sps.bootstrap(tuple(arrays), lambda *a, axis=-1: statistic(*a, axis=axis), paired=paired,
                                vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                                method="percentile", random_state=np.random.default_rng(seed), batch=batch)
            low, high = res.confidence_interval
            method = "percentile"
    # an interval the resamples cannot define (e.g. a ratio whose denominator is 0 in some resamples) stays
    # undefined: the verdict rule then says inconclusive, never a zero-width, maximally certain interval
    return Estimate(value, float(low), float(high), len(arrays[0]), confidence, f"bootstrap {method}",
                    np.asarray(res.bootstrap_distribution, dtype=float).reshape(-1))


def exact(value: float, n: int) -> Estimate:
    """A property computed exactly (no sampling): a zero-width interval."""
    return Estimate(float(value), float(value), float(value), n, method="exact", replicates=np.full(1, float(value)))


def pool(estimates: Sequence[Estimate], *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """One Estimate from the same statistic measured on several training seeds.

    Value: the mean over seeds. Interval: a hierarchical percentile bootstrap: each resample draws the seeds
    with replacement and, for each drawn seed, one replicate of its image bootstrap; the mean of those is one
    pooled replicate. A single seed returns its own estimate (its interval covers the images only).
    """
    estimates = list(estimates)
    if not estimates:
        raise ValueError("pool needs at least one estimate")
    if len(estimates) == 1:
        return estimates[0]
    confidence = estimates[0].confidence
    if any(abs(e.confidence - confidence) > 1e-12 for e in estimates):
        raise ValueError("pooled estimates must share their confidence level")
    value = float(np.mean([e.value for e in estimates]))
    reps = [e.replicates if e.replicates is not None and len(e.replicates) else np.array([e.value]) for e in estimates]
    rng = np.random.default_rng(seed)
    k = len(estimates)
    seeds = rng.integers(0, k, size=(n_resamples, k))
    draws = np.stack([reps[s][rng.integers(0, len(reps[s]), size=n_resamples)] for s in range(k)], 1)  # (B, k)
    pooled = np.take_along_axis(draws, seeds, axis=1).mean(1)
    alpha = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        if np.all(np.isfinite(pooled)):
            low, high = np.quantile(pooled, [alpha, 1 - alpha])
        else:  # a seed whose own interval is undefined leaves the pooled one undefined: inconclusive
            low, high = float("nan"), float("nan")
    # a statistic saturated on any seed is uninformative pooled: its interval would mix in a bound, not a response
    flagged = [(i, e.uninformative) for i, e in enumerate(estimates) if e.uninformative]
    uninformative = (None if not flagged else flagged[0][1] if len(flagged) == k else
                     f"on {len(flagged)} of {k} seeds: {flagged[0][1]}")
    return Estimate(value, float(low), float(high), sum(e.n for e in estimates), confidence,
                    f"hierarchical bootstrap over {k} seeds and their images", pooled, tuple(estimates), uninformative)


def _mean(a, axis=-1):
    return np.mean(a, axis=axis)


def mean(values, **kw) -> Estimate:
    """The mean with a bootstrap interval; a sample of identical 0/1 values (every image right, say) gets the
    exact Clopper-Pearson interval instead of a zero-width one (no resample can vary)."""
    a = _as_arrays([values])[0]
    if np.ptp(a) == 0 and a[0] in (0.0, 1.0):
        k, n = int(a.sum()), len(a)
        ci = sps.binomtest(k, n).proportion_ci(kw.get("confidence", CONFIDENCE), method="exact")
        return Estimate(float(a[0]), float(ci.low), float(ci.high), n, kw.get("confidence", CONFIDENCE),
                        "exact binomial (Clopper-Pearson)", np.random.default_rng(kw.get("seed", 0)).binomial(
                            n, float(np.clip(a[0], 0.5 / n, 1 - 0.5 / n)), kw.get("n_resamples", N_RESAMPLES)) / n)
    return bootstrap(_mean, values, **kw)


def mean_difference(a, b, *, paired: bool = True, **kw) -> Estimate:
    """mean(a) - mean(b); paired when a[i] and b[i] come from the same image."""
    return bootstrap(lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis), a, b, paired=paired, **kw)


def ratio_of_means(a, b, *, paired: bool = True, **kw) -> Estimate:
    """mean(a) / mean(b): scale-free, for magnitudes measured on different models."""
    def ratio(x, y, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(x, axis=axis) / np.mean(y, axis=axis)
    if np.mean(_as_arrays([b])[0]) == 0:
        raise Unmeasurable("a ratio of means whose denominator sample is all zeros")
    return bootstrap(ratio, a, b, paired=paired, **kw)


@dataclass(frozen=True)
class TestResult:
    name: str
    statistic: float
    pvalue: float
    alternative: str


def mann_whitney(a, b, *, alternative: str = "greater") -> TestResult:
    a, b = _as_arrays([a, b])
    r = sps.mannwhitneyu(a, b, alternative=alternative)
    return TestResult("Mann-Whitney U", float(r.statistic), float(r.pvalue), alternative)


def wilcoxon(a, b, *, alternative: str = "greater") -> TestResult:
    a, b = _as_arrays([a, b])
    r = sps.wilcoxon(a, b, alternative=alternative)
    return TestResult("Wilcoxon signed-rank", float(r.statistic), float(r.pvalue), alternative)


def spearman(x, y, *, alternative: str = "two-sided") -> TestResult:
    x, y = _as_arrays([x, y])
    r = sps.spearmanr(x, y, alternative=alternative)
    return TestResult("Spearman rho", float(r.statistic), float(r.pvalue), alternative)


def binomial(k: int, n: int, p: float, *, alternative: str = "greater") -> TestResult:
    r = sps.binomtest(int(k), int(n), p, alternative=alternative)
    return TestResult("binomial", float(k) / n, float(r.pvalue), alternative)


COMPARATORS = (">", ">=", "<", "<=")


def verdict(estimate: Estimate, comparator: str, threshold: float) -> Verdict:
    """The docs/claims.md rule, applied to an interval against a threshold."""
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator must be one of {COMPARATORS}, got {comparator!r}")
    if not estimate.finite:
        return Verdict.INCONCLUSIVE
    lo, hi = estimate.low, estimate.high
    if comparator == ">":
        claimed, opposite = lo > threshold, hi < threshold
    elif comparator == ">=":
        claimed, opposite = lo >= threshold, hi < threshold
    elif comparator == "<":
        claimed, opposite = hi < threshold, lo > threshold
    else:
        claimed, opposite = hi <= threshold, lo > threshold
    if claimed:
        return Verdict.REPRODUCED
    if opposite:
        return Verdict.CONTRADICTED
    return Verdict.INCONCLUSIVE


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim of several relations holds when all hold; any contradicted one contradicts it."""
    if not verdicts:
        raise ValueError("a claim needs at least one checked relation")
    if any(v is Verdict.CONTRADICTED for v in verdicts):
        return Verdict.CONTRADICTED
    if all(v is Verdict.REPRODUCED for v in verdicts):
        return Verdict.REPRODUCED
    return Verdict.INCONCLUSIVE
