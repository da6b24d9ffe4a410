"""Statistics with uncertainty, the claims' hypothesis tests, and the verdict rule (docs/statistics.md).

Every statistic a claim checks is an ``Estimate``: a value and a confidence interval, from a bootstrap over
images (scipy.stats.bootstrap, BCa by default) that records its resampling (``resampling``) and can give its
interval at another level (``interval(level)``, for the multiplicity rule). Training seeds and evaluation images
are crossed (every seed is measured on the same images, every seed's bootstrap draws the same image resamples),
so ``pool`` aligns the seeds' replicates and gives two scopes: "these models" (fixed effects: the mean over the
checkpoints at hand, images resampled) and "this training recipe" (random effects over seeds: a Student t
interval with k - 1 df on s^2/k plus the shared image variance). A trend over a few trained models
(``trend``) is an exact permutation test over the models (Page's L across seeds). The verdict rule: reproduced
when the nominal interval lies wholly on the claimed side of the threshold, contradicted when the
multiplicity-adjusted interval (1 - alpha/m) lies wholly on the other side, inconclusive otherwise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
from scipy import stats as sps

from advclaims import timing
from advclaims.verdict.estimate import (CONFIDENCE, IMAGES, MODELS, RECIPE, Estimate, TestResult,
                                        Unmeasurable, Verdict)
from advclaims.verdict.trends import pool_trends, trend  # noqa: F401  (stats.trend: a trend over models)

N_RESAMPLES = 2000
# Resampled values held at once by one bootstrap call: scipy draws an (n_resamples, n) index matrix per sample,
# which for LP-13's kernel bootstrap at the paper width (about 1.2 million kernels) is 19 GiB; in batches of
# this many values it is 128 MiB per sample. Batching changes no number (the same generator, in the same order).
BOOTSTRAP_BATCH_VALUES = 2 ** 24


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
              n_resamples: int = N_RESAMPLES, seed: int = 0, method: str = "BCa",
              bounds: tuple[float, float] | None = None) -> Estimate:
    """Point value and bootstrap interval of ``statistic(*samples)`` (its seconds count as the instance's
    bootstrap phase, advclaims.timing; each call adds its resamples to the "bootstrap_resamples" counter).

    ``paired=True`` resamples the same indices in every sample (measurements on the same images). The estimate
    records its resampling (sizes, generator seed, resamples, paired): two bootstraps with the same one drew the
    same image resamples, replicate by replicate, which ``pool`` uses. Degenerate data (every resample gives the
    same value) yields a zero-width interval flagged uninformative.
    """
    timing.count("bootstrap_resamples", int(n_resamples))
    with timing.phase("bootstrap"):
        return _bootstrap(statistic, samples, paired, confidence, n_resamples, seed, method, bounds)


def _bootstrap(statistic, samples, paired, confidence, n_resamples, seed, method, bounds) -> Estimate:
    arrays = _as_arrays(samples)
    if paired and len({len(a) for a in arrays}) != 1:
        raise ValueError("paired samples must have the same length")
    value = float(statistic(*arrays))
    resampling = (tuple(len(a) for a in arrays), int(seed), int(n_resamples), bool(paired))
    if np.ptp(np.concatenate(arrays)) == 0:
        return Estimate(value, value, value, len(arrays[0]), confidence, "degenerate", np.full(n_resamples, value),
                        uninformative=f"every one of the {len(arrays[0])} units gives the same value (saturated)",
                        resampling=resampling)
    batch = max(1, min(n_resamples, BOOTSTRAP_BATCH_VALUES // max(len(a) for a in arrays)))

    def run(level: float, how: str, previous=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on BCa's degenerate cases; we fall back below
            return sps.bootstrap(tuple(arrays), lambda *a, axis=-1: statistic(*a, axis=axis), paired=paired,
                                 vectorized=True, confidence_level=level, n_resamples=0 if previous else n_resamples,
                                 method=how, random_state=np.random.default_rng(seed), batch=batch,
                                 bootstrap_result=previous)

    res = run(confidence, method)
    low, high = res.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)) and method != "percentile":
        res = run(confidence, "percentile")
        low, high = res.confidence_interval
        method = "percentile"
    replicates = np.asarray(res.bootstrap_distribution, dtype=float).reshape(-1)

    def at_level(level: float) -> tuple[float, float]:  # the same resamples, another level (no new draws)
        return tuple(map(float, run(level, method, res).confidence_interval))

    # an interval the resamples cannot define (e.g. a ratio whose denominator is 0 in some resamples) stays
    # undefined: the verdict rule then says inconclusive, never a zero-width, maximally certain interval
    return Estimate(value, float(low), float(high), len(arrays[0]), confidence, f"bootstrap {method}", replicates,
                    uninformative=_at_bound(value, low, high, bounds), resampling=resampling, at_level=at_level)
    # any other zero width: Estimate.degenerate (inconclusive, never deciding)


def _at_bound(value: float, low: float, high: float, bounds) -> str | None:
    """A zero-width interval at a bound of the statistic's range (a rank correlation of exactly 1, a ratio of
    magnitudes of exactly 0) is saturated: the data sit where the statistic cannot move further."""
    if bounds is None or not (math.isfinite(low) and low == high) or value not in bounds:
        return None
    return f"every resample gives {value:g}, a bound of the statistic (saturated)"


def exact(value: float, n: int) -> Estimate:
    """A property computed exactly (no sampling): a zero-width interval."""
    return Estimate(float(value), float(value), float(value), n, method="exact", replicates=np.full(1, float(value)),
                    covers="nothing varies (computed exactly)")


def _image_variance(estimates: Sequence[Estimate]) -> tuple[float, np.ndarray | None, str]:
    """The variance of the seeds' mean from the shared evaluation images, its aligned replicates (or None) and
    how it was got: aligned replicates when every seed's bootstrap drew the same resamples, else the
    fully-correlated bound (mean of the seeds' bootstrap sds)^2, which never understates a crossed design."""
    k = len(estimates)
    res = {e.resampling for e in estimates}
    reps = [e.replicates for e in estimates]
    if (len(res) == 1 and None not in res and all(r is not None and len(r) == e.resampling[2] for r, e in
                                                  zip(reps, estimates))):
        mean_rep = np.mean(np.stack(reps), axis=0)
        v = float(np.var(mean_rep, ddof=1)) if np.all(np.isfinite(mean_rep)) else float("nan")
        return v, mean_rep, "aligned image resamples"
    sds = []
    for e in estimates:
        if e.replicates is not None and len(e.replicates) > 1:
            sds.append(float(np.std(e.replicates, ddof=1)))
        else:  # no distribution kept: the sd a normal interval of this width would have
            sds.append((e.high - e.low) / (2 * sps.norm.ppf(0.5 + e.confidence / 2)))
    return (float(np.mean(sds)) ** 2, None,
            f"fully-correlated bound on the image variance ({k} seeds' resampling differ)")


def pool(estimates: Sequence[Estimate], *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """One Estimate from the same statistic measured on several training seeds (crossed with the images).

    Value: the mean over seeds. The returned estimate is the recipe scope (random effects over seeds: variance
    s^2/k + V_img, Student t with k - 1 df); ``.other`` (or ``at_scope("models")``) is the models
    scope (the mean over these checkpoints: percentile interval of the aligned mean replicate). One seed returns
    its own estimate (models scope). Trend estimates pool by Page's L. ``n`` is the number of images.
    ``n_resamples`` and ``seed`` are kept for callers; the intervals need no new draws.
    """
    estimates = list(estimates)
    if not estimates:
        raise ValueError("pool needs at least one estimate")
    if len(estimates) == 1:
        return estimates[0]
    confidence = estimates[0].confidence
    if any(abs(e.confidence - confidence) > 1e-12 for e in estimates):
        raise ValueError("pooled estimates must share their confidence level")
    if any(e.pvalues is not None for e in estimates):
        return pool_trends(estimates)
    k = len(estimates)
    values = np.array([e.value for e in estimates])
    value = float(values.mean())
    flagged = [e.uninformative for e in estimates if e.uninformative]  # saturated on a seed: uninformative pooled
    uninformative = (None if not flagged else flagged[0] if len(flagged) == k else
                     f"on {len(flagged)} of {k} seeds: {flagged[0]}")
    zero = [e.degenerate for e in estimates if e.degenerate and not e.uninformative]  # zero width on a seed: the
    # data of that seed cannot put the statistic on either side, so neither can the pool (inconclusive)
    common = dict(n=estimates[0].n, confidence=confidence, per_seed=tuple(estimates), uninformative=uninformative,
                  degenerate_on_seeds=f"on {len(zero)} of {k} seeds: {zero[0]}" if zero else None)
    if all(e.method == "exact" for e in estimates):
        if np.ptp(values) == 0:
            return exact(value, estimates[0].n)
        # exact on every seed but differing: the mean over these models is known exactly; over the recipe, the
        # seeds' spread is the only variance (t with k - 1 df on s^2/k)
        half = lambda level: sps.t.ppf(0.5 + level / 2, k - 1) * math.sqrt(float(np.var(values, ddof=1)) / k)
        models = replace(exact(value, estimates[0].n), per_seed=tuple(estimates))
        return Estimate(value, value - half(confidence), value + half(confidence), estimates[0].n, confidence,
                        f"random effects over {k} seeds of an exact statistic: t ({k - 1} df) on s^2/k",
                        per_seed=tuple(estimates), scope=RECIPE, other=models,
                        covers=f"training seeds ({k}) and the method's random draws (they follow the seed)",
                        at_level=lambda level: (value - half(level), value + half(level)))
    finite = all(e.finite for e in estimates)
    v_img, mean_rep, how = _image_variance(estimates) if finite else (float("nan"), None, "")
    if not all(e.method == "exact" for e in estimates) and not finite:
        nan = float("nan")  # a seed whose own interval is undefined leaves the pooled one undefined: inconclusive
        return Estimate(value, nan, nan, method=f"pooled over {k} seeds (a seed's interval is undefined)", **common)

    if mean_rep is not None:
        def models_at(level):
            return tuple(float(q) for q in np.quantile(mean_rep, [0.5 - level / 2, 0.5 + level / 2]))
        models_method = f"percentile of the seeds' aligned mean replicate ({k} seeds)"
    else:
        def models_at(level):
            h = sps.norm.ppf(0.5 + level / 2) * math.sqrt(v_img)
            return value - h, value + h
        models_method = f"normal interval, {how}"
    models = Estimate(value, *models_at(confidence), method=models_method, replicates=mean_rep, scope=MODELS,
                      covers=f"{IMAGES} and the method's draws on them; the {k} trained models fixed",
                      at_level=models_at, **common)
    s2 = float(np.var(values, ddof=1))
    var = s2 / k + v_img  # s^2/k carries training, the method's draws and the seeds' own image noise

    def recipe_at(level):  # k - 1 df, not Welch-Satterthwaite's: WS covered 0.91 at 2 and 3 seeds (docs/statistics.md)
        h = sps.t.ppf(0.5 + level / 2, k - 1) * math.sqrt(var)
        return value - h, value + h
    recipe_method = f"random effects over {k} seeds: t ({k - 1} df) on s^2/k + image variance ({how})"
    return Estimate(value, *recipe_at(confidence), method=recipe_method, scope=RECIPE,
                    covers=f"training seeds ({k}), the method's random draws (they follow the seed) and {IMAGES}",
                    other=models, at_level=recipe_at, **common)


def _mean(a, axis=-1):
    return np.mean(a, axis=axis)


def mean(values, **kw) -> Estimate:
    """The mean with a bootstrap interval; a sample of identical 0/1 values (every image right, say) gets the
    exact Clopper-Pearson interval instead of a zero-width one (no resample can vary)."""
    a = _as_arrays([values])[0]
    if np.ptp(a) == 0 and a[0] in (0.0, 1.0):
        k, n = int(a.sum()), len(a)

        def at_level(level):
            ci = sps.binomtest(k, n).proportion_ci(level, method="exact")
            return float(ci.low), float(ci.high)
        return Estimate(float(a[0]), *at_level(kw.get("confidence", CONFIDENCE)), n, kw.get("confidence", CONFIDENCE),
                        "exact binomial (Clopper-Pearson)", np.random.default_rng(kw.get("seed", 0)).binomial(
                            n, float(np.clip(a[0], 0.5 / n, 1 - 0.5 / n)), kw.get("n_resamples", N_RESAMPLES)) / n,
                        at_level=at_level)
    return bootstrap(_mean, values, **kw)


def mean_difference(a, b, *, paired: bool = True, **kw) -> Estimate:
    """mean(a) - mean(b); paired when a[i] and b[i] come from the same image.

    Paired 0/1 outcomes (right or wrong on each image) whose difference is the same on every image (no image
    changes, say) leave every bootstrap resample at one value; they get the exact binomial bound instead: with
    no pair against the observed direction among n, the share of such pairs is at most u (Clopper-Pearson),
    so the difference lies in [-u, u] when it is 0 on every image and within 2u of +-1 when it is +-1."""
    x, y = _as_arrays([a, b])
    d = x - y if paired and len(x) == len(y) else None
    if d is not None and np.ptp(d) == 0 and np.isin(np.concatenate([x, y]), (0.0, 1.0)).all():
        n, diff = len(d), float(d[0])

        def at_level(level):
            u = float(sps.binomtest(0, n).proportion_ci(level, method="exact").high)
            return {0.0: (-u, u), 1.0: (1 - 2 * u, 1.0), -1.0: (-1.0, -1 + 2 * u)}[diff]
        confidence = kw.get("confidence", CONFIDENCE)
        return Estimate(diff, *at_level(confidence), n, confidence,
                        "exact binomial bound (paired 0/1 outcomes, the same difference on every image)",
                        at_level=at_level)
    return bootstrap(lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis), a, b, paired=paired, **kw)


def ratio_of_means(a, b, *, paired: bool = True, **kw) -> Estimate:
    """mean(a) / mean(b): scale-free, for magnitudes measured on different models."""
    def ratio(x, y, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(x, axis=axis) / np.mean(y, axis=axis)
    x, y = _as_arrays([a, b])
    if np.mean(y) == 0:
        raise Unmeasurable("a ratio of means whose denominator sample is all zeros")
    if (x >= 0).all() and (y >= 0).all():  # magnitudes: 0 is the bound of the ratio
        kw.setdefault("bounds", (0.0, math.inf))
    return bootstrap(ratio, a, b, paired=paired, **kw)


def spearman_rho(x, y) -> float:
    """Spearman's rho of ``y`` against ``x`` as a point value; 0 when either side is constant (no trend to rank)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(sps.spearmanr(x, y).statistic)


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


def _sides(lo: float, hi: float, comparator: str, threshold: float) -> tuple[bool, bool]:
    if comparator == ">":
        return lo > threshold, hi < threshold
    if comparator == ">=":
        return lo >= threshold, hi < threshold
    if comparator == "<":
        return hi < threshold, lo > threshold
    return hi <= threshold, lo > threshold


def contradiction_level(m: int, confidence: float = CONFIDENCE) -> float:
    """The Bonferroni level at which one of a claim's m deciding checks must contradict it: 1 - alpha/m."""
    return 1 - (1 - confidence) / max(1, m)


def verdict(estimate: Estimate, comparator: str, threshold: float, *, m: int = 1) -> Verdict:
    """The docs/statistics.md rule for one check of a claim with ``m`` deciding checks: reproduced when the
    nominal interval lies wholly on the claimed side; contradicted when the interval at 1 - alpha/m lies wholly
    on the other side (computed only when the nominal one does); inconclusive otherwise. A trend estimate
    decides by its one-sided p-values instead (claimed direction p < alpha; opposite p < alpha/m). A degenerate
    estimate (``Estimate.degenerate``: saturated, or zero-width and not exact) never decides: inconclusive."""
    if comparator not in COMPARATORS:
        raise ValueError(f"comparator must be one of {COMPARATORS}, got {comparator!r}")
    if estimate.degenerate:
        return Verdict.INCONCLUSIVE
    alpha = 1 - estimate.confidence
    if estimate.pvalues is not None:
        if threshold != 0:
            raise ValueError(f"a trend (rank correlation) is tested against no trend: threshold must be 0, "
                             f"got {threshold!r}")
        claimed, opposite = ("greater", "less") if comparator in (">", ">=") else ("less", "greater")
        if estimate.pvalues[claimed] < alpha:
            return Verdict.REPRODUCED
        if estimate.pvalues[opposite] < alpha / max(1, m):
            return Verdict.CONTRADICTED
        return Verdict.INCONCLUSIVE
    if not estimate.finite:
        return Verdict.INCONCLUSIVE
    claimed, opposite = _sides(estimate.low, estimate.high, comparator, threshold)
    if claimed:
        return Verdict.REPRODUCED
    if opposite and m > 1:
        opposite = _sides(*estimate.interval(contradiction_level(m, estimate.confidence)), comparator, threshold)[1]
    return Verdict.CONTRADICTED if opposite else Verdict.INCONCLUSIVE


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """A claim of several relations holds when all hold; any contradicted one contradicts it."""
    if not verdicts:
        raise ValueError("a claim needs at least one checked relation")
    if any(v is Verdict.CONTRADICTED for v in verdicts):
        return Verdict.CONTRADICTED
    if all(v is Verdict.REPRODUCED for v in verdicts):
        return Verdict.REPRODUCED
    return Verdict.INCONCLUSIVE
