"""Trends over a few trained models (issue 21): the unit is the trained model, so a trend is tested by an exact
permutation test over the models (Spearman's rho against the models' order, all k! orders), and across seeds by
a stratified trend test (Page's L on the seeds x models table). Use them as ``stats.trend`` and ``stats.pool``."""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from scipy import stats as sps

from advclaims.verdict.estimate import CONFIDENCE, RECIPE, Estimate, Unmeasurable


def trend(values, order, *, alternative: str, confidence: float = CONFIDENCE) -> Estimate:
    """Spearman's rho of ``values`` (one per trained model) against ``order`` (e.g. each model's weight decay),
    with one-sided p-values of the exact permutation test over the k models (all k! orders; k = 4 gives 1/24 for
    a perfect order). The unit is the trained model: k models are k values, whatever each was measured on.
    ``alternative`` ("greater" or "less") is the claimed direction, kept for ``pvalue``; the verdict takes the
    direction from the check's comparator. The interval is [-1, 1]: a trend decides by its p-values."""
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    v, o = (np.asarray(x, dtype=float).reshape(-1) for x in (values, order))
    if len(v) != len(o):
        raise ValueError(f"trend needs one order per value, got {len(v)} values and {len(o)} orders")
    if len(v) < 3:
        raise Unmeasurable(f"a trend over {len(v)} model{'s' * (len(v) != 1)}: a permutation test needs at least 3")
    if not np.all(np.isfinite(v)):
        raise ValueError("a trend value is NaN or inf; the measurement upstream is broken (diverged model?)")
    k = len(v)
    if np.ptp(v) == 0 or np.ptp(o) == 0:
        return Estimate(0.0, -1.0, 1.0, k, confidence, f"exact permutation test over {k} models",
                        uninformative="every model gives the same value: no order to test", pvalues={"greater": 1.0,
                        "less": 1.0}, test=f"exact permutation test over {k} models", trend_data=(v, o))
    rv, ro = sps.rankdata(v), sps.rankdata(o)
    observed = float(_rhos(rv[None], ro)[0])
    if k <= 8:
        null = _rhos(np.array(list(itertools.permutations(rv))), ro)
        name = f"exact permutation test over {k} models"
        greater, less = float(np.mean(null >= observed - 1e-9)), float(np.mean(null <= observed + 1e-9))
    else:  # k! is too many: a seeded Monte Carlo over permutations, p = (1 + hits) / (1 + draws)
        rng = np.random.default_rng(0)
        null = _rhos(np.array([rng.permutation(rv) for _ in range(20000)]), ro)
        name = f"Monte Carlo permutation test over {k} models (20000 permutations)"
        greater = float((1 + np.sum(null >= observed - 1e-9)) / (1 + len(null)))
        less = float((1 + np.sum(null <= observed + 1e-9)) / (1 + len(null)))
    return Estimate(observed, -1.0, 1.0, k, confidence, name, pvalues={"greater": greater, "less": less}, test=name,
                    covers=f"the order of {k} trained models (each model one unit)", trend_data=(v, o))


def _rhos(perms: np.ndarray, ro: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ranks in ``perms`` with the ranks ``ro`` (Spearman's rho)."""
    a = perms - perms.mean(1, keepdims=True)
    b = ro - ro.mean()
    return (a @ b) / np.sqrt((a ** 2).sum(1) * (b ** 2).sum())


def pool_trends(estimates: Sequence[Estimate]) -> Estimate:
    """Several seeds' trends over the same models: a stratified trend test, Page's L on the seeds x models
    table (exact where scipy can), one-sided each way; the value is the mean rho over seeds."""
    if any(e.trend_data is None for e in estimates):
        raise ValueError("pool cannot mix trend estimates with interval estimates")
    orders = [e.trend_data[1] for e in estimates]
    if any(len(o) != len(orders[0]) or not np.array_equal(np.sort(o), np.sort(orders[0])) for o in orders):
        raise ValueError("pooled trends must be over the same models (the same orders) on every seed")
    order = np.sort(orders[0])
    if len(np.unique(order)) != len(order):
        raise Unmeasurable("Page's trend test needs distinct model orders; two models share one")
    table = np.stack([e.trend_data[0][np.argsort(e.trend_data[1], kind="stable")] for e in estimates])
    k, s = table.shape[1], table.shape[0]
    value = float(np.mean([e.value for e in estimates]))
    up = sps.page_trend_test(table, method="auto")
    down = sps.page_trend_test(table[:, ::-1], method="auto")
    name = f"Page's L trend test over {k} models x {s} seeds ({up.method})"
    flagged = [e.degenerate for e in estimates if e.degenerate]
    return Estimate(value, -1.0, 1.0, k, estimates[0].confidence, name, per_seed=tuple(estimates),
                    uninformative=flagged[0] if len(flagged) == s else None, scope=RECIPE,
                    pvalues={"greater": float(up.pvalue), "less": float(down.pvalue)}, test=name,
                    covers=f"the order of {k} trained models over {s} training seeds", trend_data=(table, order))
