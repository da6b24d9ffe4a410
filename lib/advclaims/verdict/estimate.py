"""An ``Estimate``: a statistic with its confidence interval, the scope it speaks for and the variance it covers;
the three verdicts; ``Unmeasurable``. The types every other part of the verdict layer builds on (``stats``
computes estimates, ``trends`` tests trends over models, ``pool`` combines seeds)."""

from __future__ import annotations

import base64
import enum
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
class Unmeasurable(ValueError):
    """The data do not allow the statistic (too few values, an empty group, no boundary points). The message
    says which and why in one line; the claim instance is then inconclusive with that reason, not an error."""


class Verdict(str, enum.Enum):
    REPRODUCED = "reproduced"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value


MODELS, RECIPE = "models", "recipe"  # the two scopes of a verdict (docs/statistics.md)
SCOPE_NAMES = {MODELS: "these models", RECIPE: "this training recipe"}
IMAGES = "the evaluation images"


@dataclass(frozen=True)
class Estimate:
    """A statistic with its confidence interval; ``n`` is the number of resampled units (evaluation images for a
    pooled one, trained models for a trend). ``scope`` says what the interval is about ("models": the checkpoints
    at hand; "recipe": the training recipe over seeds), ``covers`` which sources of variance it carries, and
    ``other`` holds the other scope's estimate of a pooled statistic. A trend estimate decides by ``pvalues``
    (one-sided, keyed "greater"/"less") from ``test``, not by its interval."""

    value: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE
    method: str = "bootstrap"
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False)  # the bootstrap distribution
    per_seed: tuple["Estimate", ...] = field(default=(), repr=False, compare=False)  # what a pooled one pooled
    uninformative: str | None = None  # why the statistic cannot go either way (e.g. saturated): never decides
    degenerate_on_seeds: str | None = None  # a pooled one: some seeds' intervals had zero width (see degenerate)
    resampling: tuple | None = field(default=None, compare=False)  # (sizes, seed, n_resamples, paired) of a bootstrap
    scope: str = MODELS
    covers: str = IMAGES
    other: "Estimate | None" = field(default=None, repr=False, compare=False)  # the other scope (pooled ones)
    pvalues: dict | None = field(default=None, compare=False)  # a trend's one-sided p-values
    test: str | None = None  # a trend's test, in words
    trend_data: tuple | None = field(default=None, repr=False, compare=False)  # (values, order) of a trend
    at_level: Callable[[float], tuple[float, float]] | None = field(default=None, repr=False, compare=False)
    _levels: dict = field(default_factory=dict, repr=False, compare=False)  # intervals computed at other levels

    def __post_init__(self):
        for k in ("value", "low", "high"):
            object.__setattr__(self, k, float(getattr(self, k)))
        if not (self.low <= self.value <= self.high) and all(map(math.isfinite, (self.low, self.value, self.high))):
            # BCa can put the point estimate outside the interval for skewed statistics; widen honestly
            object.__setattr__(self, "low", min(self.low, self.value))
            object.__setattr__(self, "high", max(self.high, self.value))

    @property
    def finite(self) -> bool:
        return all(map(math.isfinite, (self.value, self.low, self.high)))

    @property
    def degenerate(self) -> str | None:
        """Why the statistic cannot decide: flagged uninformative, or a zero-width interval of a statistic that is
        not exact (every resample gave the same value: the data cannot show it varying, so it cannot show it
        is on one side)."""
        if self.uninformative:
            return self.uninformative
        if self.degenerate_on_seeds:
            return self.degenerate_on_seeds
        if self.pvalues is None and self.finite and self.low == self.high and self.method != "exact":
            return "every resample gives the same value (a zero-width interval of a statistic that is not exact)"
        return None

    def interval(self, level: float) -> tuple[float, float]:
        """The interval at confidence ``level``: recomputed (the same bootstrap resamples, or the pooled t /
        replicates) when the estimate knows how, else widened from the nominal one by the normal quantiles."""
        if abs(level - self.confidence) < 1e-12 or not self.finite:
            return self.low, self.high
        if level not in self._levels:
            if self.at_level is not None:
                lo, hi = self.at_level(level)
                lo, hi = min(lo, self.value), max(hi, self.value)
            elif self.low == self.high:
                lo, hi = self.low, self.high
            else:
                f = sps.norm.ppf(0.5 + level / 2) / sps.norm.ppf(0.5 + self.confidence / 2)
                lo, hi = self.value - f * (self.value - self.low), self.value + f * (self.high - self.value)
            self._levels[level] = (float(lo), float(hi))
        return self._levels[level]

    def at_scope(self, scope: str) -> "Estimate":
        """This statistic's estimate at ``scope``; a recipe scope that was not computed (one seed) gives the
        models one unchanged (check ``.scope`` for what you got)."""
        if scope not in SCOPE_NAMES:
            raise ValueError(f"scope must be one of {sorted(SCOPE_NAMES)}, got {scope!r}")
        if self.scope == scope:
            return self
        if self.other is not None and self.other.scope == scope:  # it keeps this one as its other scope
            return replace(self.other, other=replace(self, other=None), _levels={})
        return self

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("value", "low", "high", "n", "confidence", "method", "uninformative",
                                             "scope", "covers")}
        if self.pvalues is not None:
            out.update(pvalues=dict(self.pvalues), test=self.test)
        if self.per_seed:
            out["per_seed"] = [{k: getattr(e, k) for k in ("value", "low", "high", "n")} for e in self.per_seed]
        if self.other is not None and self.other.pvalues is None:
            out["other_scope"] = {k: getattr(self.other, k) for k in ("scope", "low", "high", "method", "covers")}
        return out

    def shifted(self, by: float) -> "Estimate":
        """The estimate of (statistic - by): a comparison with a fixed reference such as chance."""
        if self.pvalues is not None:
            raise ValueError("a trend (rank correlation) cannot be shifted: its test is against no trend")
        at = self.at_level
        return replace(self, value=self.value - by, low=self.low - by, high=self.high - by,
                       replicates=None if self.replicates is None else self.replicates - by,
                       per_seed=tuple(e.shifted(by) for e in self.per_seed),
                       other=None if self.other is None else self.other.shifted(by),
                       at_level=None if at is None else (lambda lv: tuple(x - by for x in at(lv))), _levels={})

    def __str__(self) -> str:
        if self.pvalues is not None:
            return f"{self.value:.4g} (p greater {self.pvalues['greater']:.3g}, less {self.pvalues['less']:.3g})"
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass(frozen=True)
class TestResult:
    name: str
    statistic: float
    pvalue: float
    alternative: str


# -- payloads: an Estimate as plain data (a seed's Measurement crosses pytest-xdist workers as JSON) ---------------


def _array(a) -> dict | None:
    if a is None:
        return None
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    return {"shape": list(a.shape), "float64": base64.b64encode(a.tobytes()).decode("ascii")}


def _unarray(d: dict | None) -> np.ndarray | None:
    if d is None:
        return None
    return np.frombuffer(base64.b64decode(d["float64"]), dtype=np.float64).reshape(d["shape"]).copy()


def to_payload(e: Estimate) -> dict:
    """``e`` as JSON-able data, its bootstrap distribution included (exactly: float64 bytes); what cannot travel
    (``at_level``, a recipe over the original data) is rebuilt by the receiver from the distribution."""
    return {"value": e.value, "low": e.low, "high": e.high, "n": e.n, "confidence": e.confidence, "method": e.method,
            "replicates": _array(e.replicates), "per_seed": [to_payload(x) for x in e.per_seed],
            "uninformative": e.uninformative, "degenerate_on_seeds": e.degenerate_on_seeds,
            "resampling": None if e.resampling is None else [list(e.resampling[0]), *e.resampling[1:]],
            "scope": e.scope, "covers": e.covers, "other": None if e.other is None else to_payload(e.other),
            "pvalues": e.pvalues, "test": e.test,
            "trend_data": None if e.trend_data is None else [_array(x) for x in e.trend_data]}


def from_payload(d: dict) -> Estimate:
    resampling = d["resampling"]
    return Estimate(d["value"], d["low"], d["high"], d["n"], d["confidence"], d["method"],
                    replicates=_unarray(d["replicates"]), per_seed=tuple(from_payload(x) for x in d["per_seed"]),
                    uninformative=d["uninformative"], degenerate_on_seeds=d["degenerate_on_seeds"],
                    resampling=None if resampling is None else (tuple(resampling[0]), *resampling[1:]),
                    scope=d["scope"], covers=d["covers"], other=None if d["other"] is None else from_payload(d["other"]),
                    pvalues=d["pvalues"], test=d["test"],
                    trend_data=None if d["trend_data"] is None else tuple(_unarray(x) for x in d["trend_data"]))
