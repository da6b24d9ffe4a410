"""A claim instance's record: its checks held against expected/, its verdict, its scope and its outcome.

The one place a record is built, whether the instance was measured (``measured``), could not be measured
(``unmeasured``: inconclusive with the reason) or raised (``errored``). ``ClaimRecord`` is typed; its
``as_dict`` is what report.json holds and what crosses pytest-xdist workers. No pytest, no torch: a notebook
can ``evaluate`` a Measurement as the plugin does.
"""

from __future__ import annotations

import enum
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from advclaims import budgets as budgets_mod
from advclaims.verdict import expected as expected_mod
from advclaims.verdict.estimate import MODELS, SCOPE_NAMES, Verdict
from advclaims.verdict.measurement import Measurement, declarations
from advclaims.verdict.stats import combine, contradiction_level, verdict

UNINFORMATIVE = "uninformative"  # a check whose statistic cannot vary (saturated): shown, never deciding;
# a zero-width interval of a non-exact statistic (degenerate resamples) is inconclusive: it blocks reproduction


class MeasurementMismatch(ValueError):
    """A Measurement that does not hold what expected/ checks, or holds what its analysis did not declare."""


class Outcome(str, enum.Enum):
    """What a claim instance's verdict means for its test."""

    PASSED = "passed"                  # the verdict expected/ records
    KNOWN_FINDING = "known finding"    # a recorded non-reproduction (the test xfails)
    UNSTABLE = "unstable"              # one of the verdicts expected/ records as seen in equivalent runs (xfails)
    FAILED = "failed"                  # anything else held against expected/
    PROXY = "proxy data"               # a verdict on proxy data: never held against expected/
    OWN_MODEL = "own model"            # a verdict on a user's model: never held against expected/
    ERROR = "error"                    # the instance raised: no verdict

    def __str__(self) -> str:
        return self.value

    @property
    def held(self) -> bool:
        """Whether the instance was held against expected/ (the "N of M as expected/ records" count)."""
        return self in (Outcome.PASSED, Outcome.KNOWN_FINDING, Outcome.UNSTABLE, Outcome.FAILED)

    @property
    def xfails(self) -> bool:
        return self in (Outcome.KNOWN_FINDING, Outcome.UNSTABLE)


@dataclass(frozen=True)
class Instance:
    """Where a record comes from: the claim, the dataset and the instance's other parameters, the budget and the
    training seeds, the node id, the proxy marker of the data (None: real data) and the models it was handed."""

    spec: expected_mod.ClaimSpec
    dataset: str
    budget: str
    seeds: tuple[int, ...]
    variant: str = ""
    others: tuple[str, ...] = ()
    nodeid: str = ""
    proxy: dict | None = None
    models: tuple[dict, ...] = ()
    declared: frozenset[str] | None = None   # the statistics its analysis declares (None: no declaration found)

    @property
    def external(self) -> bool:
        """Whether a model of the user's took part (its verdicts are "these models" and never held)."""
        return any((m.get("source") or {}).get("kind") != "trained" for m in self.models)


@dataclass
class ClaimRecord:
    """One claim instance in the report. ``checks``, ``values``, ``tables``, ``tests`` and ``sensitivity`` are lists
    and dicts as report.json shows them; the rest is typed."""

    claim: str
    paper: str
    title: str
    source: str
    dataset: str
    budget: str
    variant: str
    nodeid: str
    seeds: list[int]
    n: int
    verdict: str
    expected: str
    expected_reason: str | None
    also_seen: list[str]
    outcome: Outcome
    scope: str
    scope_name: str
    covers: str
    scope_note: str | None
    level: float
    contradiction_level: float
    deciding_checks: int
    variance: str
    checks: list[dict] = field(default_factory=list)
    values: list[dict] = field(default_factory=list)
    paper_setting: bool = False
    tables: dict = field(default_factory=dict)
    tests: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    protocol_note: str | None = None
    depends_on: list[str] = field(default_factory=list)
    sensitivity: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    figure_errors: list[str] = field(default_factory=list)
    proxy: dict | None = None
    models: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0
    profile: dict = field(default_factory=dict)  # seconds per phase of wall_seconds (advclaims.timing)
    unmeasurable: str | None = None
    error: str | None = None
    crashed: bool = False

    def as_dict(self) -> dict:
        out = asdict(self)
        out["outcome"] = self.outcome.value
        return out

    def failure_lines(self) -> list[str]:
        """What a failed instance prints: the verdict against expected/, each check, and what to record."""
        from advclaims.verdict.report import check_interval, scope_line  # the report's formatting, one place

        lines = [f"{self.claim} on {self.variant or self.dataset} at the {self.budget} budget: verdict {self.verdict}, "
                 f"expected/{self.paper}.toml expects {self.expected}."]
        if self.unmeasurable:
            lines.append(f"  not measurable: {self.unmeasurable}")
        lines.append(f"  {scope_line(self.as_dict())}")
        lines += [f"  {c['statistic']} = {check_interval(c)}, claimed {c['comparator']} {c['threshold']}: "
                  f"{c['verdict']}" for c in self.checks if c.get("value") is not None]
        lines += [f"  paper value {v['statistic']}: measured {v['measured']:.4g}, paper {v['paper']} ± "
                  f"{v['tolerance']}" for v in self.values if self.paper_setting and v["within"] is False]
        lines.append(f"If this is a real change, record it under [claims.{self.claim}.expect.\"{self.dataset}."
                     f"{self.budget}\"] with its reason.")
        return lines


# -- building ------------------------------------------------------------------------------------------------------


def measured(instance: Instance, m: Measurement, *, wall_seconds: float = 0.0, profile: dict | None = None) -> ClaimRecord:
    """The record of a measured instance: every check at the budget's deciding scope, the claim's verdict, the
    paper's figures beside ours, the sensitivity over declared protocol parameters, and the outcome."""
    spec = instance.spec
    missing = [c.statistic for c in spec.checks if c.statistic not in m.statistics]
    if missing:  # expected/ loads only names the analysis declares; an analysis that skips one is a bug of its own
        raise MeasurementMismatch(f"{spec.id}: expected/{spec.paper}.toml checks {missing}, which the analysis did "
                                  f"not measure (it measured {', '.join(sorted(m.statistics))}): fix the name in "
                                  f"expected/ or the analysis")
    extra = sorted(set(m.statistics) - instance.declared) if instance.declared is not None else []
    if extra:
        raise MeasurementMismatch(f"{spec.id}: the analysis measured {extra}, which its @measures declaration does "
                                  f"not name: declare them (advclaims.verdict.measurement.measures)")
    scope, _ = budgets_mod.get(instance.budget).deciding_scope(len(instance.seeds), external=instance.external)
    checks, got, n_deciding = _checks(spec, m.statistics, scope)
    sensitivity, depends = _sensitivity(spec, m, checks, scope)
    return _record(instance, n=m.n, verdict=_combined(checks), checks=checks, values=_values(spec, m),
                   tables=m.tables, tests=[{"name": k, **vars(t)} for k, t in m.tests.items()], notes=list(m.notes),
                   depends_on=depends, sensitivity=sensitivity, wall_seconds=wall_seconds, profile=profile or {},
                   scope=_scope_fields(instance, got, n_deciding))


def unmeasured(instance: Instance, reason: str, *, wall_seconds: float = 0.0) -> ClaimRecord:
    """The record of an instance whose data do not allow its statistics: inconclusive, with the reason."""
    checks = [{"statistic": c.statistic, "description": c.description, "comparator": c.comparator,
               "threshold": c.threshold, "paper": c.paper, "tolerance": c.tolerance, "value": None, "low": None,
               "high": None, "n": 0, "verdict": Verdict.INCONCLUSIVE.value} for c in instance.spec.checks]
    return _record(instance, n=0, verdict=Verdict.INCONCLUSIVE.value, checks=checks, notes=[f"not measurable: {reason}"],
                   unmeasurable=reason, wall_seconds=wall_seconds, scope=_scope_fields(instance, None, 0))


def errored(instance: Instance, error: str, *, wall_seconds: float = 0.0, crashed: bool = False) -> ClaimRecord:
    """The record of an instance that raised (or whose process died): no verdict, the error's one line."""
    record = unmeasured(instance, error, wall_seconds=wall_seconds)
    record.unmeasurable, record.error, record.notes, record.crashed = None, error, [f"error: {error}"], crashed
    record.outcome = Outcome.ERROR
    return record


def evaluate(claim_id: str, measurement: Measurement, *, dataset: str = "fashion_mnist", budget: str = "smoke",
             expected_dir: str | Path | None = None, external: bool = False) -> dict:
    """The record a claim instance would get from ``measurement`` (its "verdict" above all), outside a pytest
    run: for tests that feed an analysis a case where the claim is false and show the verdict changes. The
    number of seeds is read off the statistics (a pooled one keeps its per-seed estimates)."""
    spec = expected_mod.load(expected_dir)[claim_id]
    k = max([len(e.per_seed) for e in measurement.statistics.values()] + [1])
    models = ({"key": "external", "source": {"kind": "checkpoint"}},) if external else ()
    found = [d for module in list(sys.modules.values()) if (getattr(module, "__name__", "") or "").startswith(
        "advclaims.analysis.") for d in declarations(vars(module), claim_id)]  # the loaded analyses that declare it
    declared = frozenset().union(*(d.statistics for d in found)) if found else None
    return measured(Instance(spec, dataset, budget, tuple(range(k)), models=models, declared=declared),
                    measurement).as_dict()


def _record(instance: Instance, *, n: int, verdict: str, checks: list[dict], scope: dict, **fields) -> ClaimRecord:
    spec = instance.spec
    expectation = spec.expectation(instance.dataset, instance.budget, instance.others)
    record = ClaimRecord(
        claim=spec.id, paper=spec.paper, title=spec.title, source=spec.source, dataset=instance.dataset,
        budget=instance.budget, variant=instance.variant or instance.dataset, nodeid=instance.nodeid,
        seeds=list(instance.seeds), n=n, verdict=verdict, expected=expectation.verdict.value,
        expected_reason=expectation.reason, also_seen=[v.value for v in expectation.also_seen],
        outcome=Outcome.PASSED, checks=checks, paper_setting=spec.in_paper_setting(instance.dataset, instance.budget),
        protocol_note=spec.protocol_note, proxy=instance.proxy, models=list(instance.models),
        variance=_coverage(instance, scope["scope"]), **scope, **fields)
    record.outcome = _outcome(record, expectation, instance)
    if record.outcome is Outcome.OWN_MODEL and record.expected_reason:
        record.expected_reason = (f"expected/ records this about the suite's own models; it is not held against "
                                  f"yours: {record.expected_reason}")
    return record


def _outcome(record: ClaimRecord, expectation: expected_mod.Expectation, instance: Instance) -> Outcome:
    if record.error:
        return Outcome.ERROR
    if instance.proxy:
        return Outcome.PROXY
    if instance.external:
        return Outcome.OWN_MODEL
    outside = [v for v in record.values if record.paper_setting and v["within"] is False]
    if outside or not expectation.accepts(record.verdict):
        return Outcome.FAILED
    if expectation.also_seen:
        return Outcome.UNSTABLE
    return Outcome.PASSED if expectation.verdict is Verdict.REPRODUCED else Outcome.KNOWN_FINDING


def _values(spec: expected_mod.ClaimSpec, m: Measurement) -> list[dict]:
    """The paper's figures beside ours (within tolerance where the paper gives one), then every other measured
    value the analysis reports, with no paper figure beside it."""
    out = []
    for v in spec.values:
        measured_value = m.values.get(v.statistic)
        within = None if measured_value is None else abs(measured_value - v.paper) <= v.tolerance
        out.append({"statistic": v.statistic, "description": v.description, "paper": v.paper,
                    "tolerance": v.tolerance, "measured": measured_value, "within": within})
    named = {v.statistic for v in spec.values}
    out += [{"statistic": k, "description": None, "paper": None, "tolerance": None, "measured": value, "within": None}
            for k, value in m.values.items() if k not in named and isinstance(value, (int, float))]
    return out


def _scope_fields(instance: Instance, got: str | None, m: int) -> dict:
    """The claim record's scope (which one decided, the sources of variance it covers, why it is not the
    budget's own) and levels: reproduction at the nominal 95%, contradiction at 1 - 0.05/m."""
    k = len(instance.seeds)
    scope, note = budgets_mod.get(instance.budget).deciding_scope(k, external=instance.external)
    if got is not None and got != scope:
        if got == MODELS:  # the statistics offer only the models scope: one run was pooled
            k, note = 1, (f"the statistics come from one run (one seed, or nothing in the instance depends on the "
                          f"seed): decided on {SCOPE_NAMES[got]}")
        else:  # trends over the trained models, pooled over the seeds (Page's L), have only the recipe scope
            note = (f"the statistics are trends over the trained models (each model one unit), pooled over the {k} "
                    f"training seeds by Page's L: they speak only for {SCOPE_NAMES[got]}, so it decides")
        scope = got
    covers = (f"training seeds ({k}), the method's random draws and the evaluation images" if scope == "recipe" else
              "the evaluation images and the method's draws on them" + (f"; the {k} trained models fixed" if k > 1
                                                                        else ""))
    return {"scope": scope, "scope_name": SCOPE_NAMES[scope], "covers": covers, "scope_note": note,
            "level": 0.95, "contradiction_level": contradiction_level(m), "deciding_checks": m}


def _coverage(instance: Instance, scope: str) -> str:
    """Which sources of variance the deciding interval covers, in words for the report."""
    k = len(instance.seeds)
    if k == 1:
        return ("these models: the evaluation images (and the method's draws on them); one training seed, so "
                "neither training nor the method's seed varies")
    if instance.external:
        return (f"these models: the evaluation images and the method's random draws ({k} seeds); not training: an "
                f"external model is one fixed model")
    if scope == "models":
        return (f"these models: the evaluation images and the method's draws on them, the {k} trained models fixed "
                f"(the recipe-scope interval over the {k} seeds is shown with each statistic)")
    return (f"this training recipe: training seeds ({k}), the method's random draws (they follow the seed) and the "
            f"evaluation images (random effects over seeds, crossed with the shared images)")


# -- checks --------------------------------------------------------------------------------------------------------


def _check_record(c: expected_mod.CheckSpec, est, spec_id: str, m: int = 1) -> dict:
    """One check's record: the estimate, its scope and levels, and its verdict among the claim's m deciding
    checks (a saturated estimate is uninformative: shown, never deciding; a zero-width interval of a statistic
    that is not exact is inconclusive: it can neither reproduce nor contradict, so the claim is not reproduced)."""
    if not math.isfinite(est.value):
        raise ValueError(f"{spec_id}: statistic {c.statistic} is not finite ({est}); the model or data upstream "
                         f"is broken (diverged training?)")
    record = {"statistic": c.statistic, "description": c.description, "comparator": c.comparator,
              "threshold": c.threshold, "paper": c.paper, "tolerance": c.tolerance, "basis": c.basis,
              "basis_note": c.basis_note, **est.as_dict(), "level": est.confidence,
              "contradiction_level": contradiction_level(m, est.confidence)}
    if est.uninformative:  # saturated (every unit at one value, or at a bound): shown, never deciding
        record.update(verdict=UNINFORMATIVE, uninformative=est.uninformative)
        return record
    if est.degenerate:  # zero-width and not exact: the data cannot put it on either side, so the claim
        # cannot be reproduced on it (an exactly-zero paired difference is no evidence for either side)
        record.update(verdict=Verdict.INCONCLUSIVE.value, degenerate=est.degenerate)
        return record
    record["verdict"] = verdict(est, c.comparator, c.threshold, m=m).value
    if m > 1 and est.pvalues is None and verdict(est, c.comparator, c.threshold).value != record["verdict"]:
        lo, hi = est.interval(record["contradiction_level"])  # computed by verdict: the reason it is not contradicted
        record.update(adjusted_low=lo, adjusted_high=hi, nominal_verdict=Verdict.CONTRADICTED.value)
    if c.threshold_range is not None:  # our threshold: the verdict at either end of the range we would defend
        record["threshold_range"] = list(c.threshold_range)
        record["verdict_across_threshold"] = {f"{t:g}": verdict(est, c.comparator, t, m=m).value
                                              for t in c.threshold_range}
    return record


def _checks(spec: expected_mod.ClaimSpec, statistics: dict, scope: str) -> tuple[list[dict], str | None, int]:
    """The records of ``spec``'s checks measured in ``statistics`` at ``scope``, the scope they got (None when
    nothing was measured) and m, the number of checks that can contradict (neither saturated nor zero-width), which
    the contradiction level divides alpha by."""
    ests = {c.statistic: statistics[c.statistic].at_scope(scope) for c in spec.checks if c.statistic in statistics}
    m = sum(1 for e in ests.values() if not e.degenerate)  # a check that cannot contradict does not dilute alpha
    got = {e.scope for e in ests.values() if e.pvalues is None} or {e.scope for e in ests.values()}
    records = [_check_record(c, ests[c.statistic], spec.id, m) for c in spec.checks if c.statistic in ests]
    return records, (scope if scope in got else next(iter(got), None)), m


def _combined(checks: list[dict]) -> str:
    deciding = [Verdict(c["verdict"]) for c in checks if c["verdict"] != UNINFORMATIVE]
    return combine(deciding).value if deciding else Verdict.INCONCLUSIVE.value


def _sensitivity(spec: expected_mod.ClaimSpec, m: Measurement, checks: list[dict],
                 scope: str) -> tuple[list[dict], list[str]]:
    """The verdict at every value of each declared protocol parameter, and what the verdict depends on."""
    rows, depends = [], []
    for p in spec.parameters:
        grid = m.sensitivity.get(p.name, {})
        verdicts = set()
        for value in p.values:
            label = f"{value:g}"
            if value == p.default:
                at = checks
            else:
                if label not in grid:
                    raise KeyError(f"{spec.id}: expected/{spec.paper}.toml declares parameter {p.name} = {label}, but "
                                   f"the analysis measured it at {sorted(grid)}")
                at = _checks(spec, grid[label], scope)[0]
            v = _combined(at)
            verdicts.add(v)
            rows.append({"parameter": p.name, "value": value, "default": value == p.default, "verdict": v,
                         "checks": {c["statistic"]: {k: c[k] for k in ("value", "low", "high", "verdict")} for c in at}})
        if len(verdicts) > 1:
            depends.append(p.name)
    for c in checks:
        if len(set(c.get("verdict_across_threshold", {}).values()) | {c["verdict"]}) > 1:
            depends.append(f"the threshold of {c['statistic']} (ours: {c['threshold_range'][0]:g} to "
                           f"{c['threshold_range'][1]:g})")
    return rows, depends
