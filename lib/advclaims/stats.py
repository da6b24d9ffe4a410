"""Statistics with uncertainty, the claims' hypothesis tests, and the verdict rule.

Every statistic a claim checks is an ``Estimate``: a value and a bootstrap confidence interval
over images (scipy.stats.bootstrap, BCa by default). The verdict rule of claims.md:
reproduced when the interval lies wholly on the claimed side of the threshold, contradicted
when it lies wholly on the other side, inconclusive otherwise.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 2000


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

    def __post_init__(self):
        if not (self.low <= self.value <= self.high) and all(map(math.isfinite, (self.low, self.value, self.high))):
            # BCa can put the point estimate outside the interval for skewed statistics; widen honestly
            object.__setattr__(self, "low", min(self.low, self.value))
            object.__setattr__(self, "high", max(self.high, self.value))

    @property
    def finite(self) -> bool:
        return all(map(math.isfinite, (self.value, self.low, self.high)))

    def as_dict(self) -> dict:
        return asdict(self)

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
        return Estimate(value, value, value, len(arrays[0]), confidence, "degenerate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on BCa's degenerate cases; we fall back below
        res = sps.bootstrap(tuple(arrays), lambda *a, axis=-1: statistic(*a, axis=axis), paired=paired,
                            vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                            method=method, random_state=np.random.default_rng(seed))
        low, high = res.confidence_interval
        if not (math.isfinite(low) and math.isfinite(high)) and method != "percentile":
            res = sps.bootstrap(tuple(arrays), lambda *a, axis=-1: statistic(*a, axis=axis), paired=paired,
                                vectorized=True, confidence_level=confidence, n_resamples=n_resamples,
                                method="percentile", random_state=np.random.default_rng(seed))
            low, high = res.confidence_interval
            method = "percentile"
    # an interval the resamples cannot define (e.g. a ratio whose denominator is 0 in some resamples) stays
    # undefined: the verdict rule then says inconclusive, never a zero-width, maximally certain interval
    return Estimate(value, float(low), float(high), len(arrays[0]), confidence, f"bootstrap {method}")


def _mean(a, axis=-1):
    return np.mean(a, axis=axis)


def mean(values, **kw) -> Estimate:
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
    """The claims.md rule, applied to an interval against a threshold."""
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
