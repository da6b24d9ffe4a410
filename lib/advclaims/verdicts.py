"""A claim's verdict: its Measurements (one per training seed) pooled, held against expected/, recorded, and
the test passed (verdict as expected), xfailed (a known finding) or failed (anything else; the message says what
to record if the change is real). Unmeasurable statistics make the instance inconclusive with their reason."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import pytest

from . import budgets as budgets_mod
from . import data as data_mod
from . import expected as expected_mod
from . import external as external_mod
from . import report as report_mod
from . import seeds as seeds_mod
from .attacks._common import NonFiniteLogits
from .health import ModelUnhealthy
from .measurement import Measurement
from .options import CATALOGUE, seeds_of
from .pipeline import Pipeline
from .stats import SCOPE_NAMES, Unmeasurable, Verdict, combine, contradiction_level, verdict
from .training import TrainingDiverged

CHECKED = pytest.StashKey[bool]()


MEASUREMENTS = pytest.StashKey[list]()


STARTED = pytest.StashKey[float]()


PROPERTY = "advclaims-record"


PIPELINES: list[Pipeline] = []  # the session's pipeline, once a test has asked for it


USED_FROM = pytest.StashKey[int]()


def pytest_runtest_setup(item):
    item.stash[STARTED] = time.perf_counter()
    item.stash[USED_FROM] = len(PIPELINES[0].used) if PIPELINES else 0


def _models_used(item) -> list[dict]:
    """The models the instance was handed (trained or external), one summary per model."""
    if not PIPELINES:
        return []
    seen = {}
    for model in PIPELINES[0].used[item.stash.get(USED_FROM, 0):]:
        seen.setdefault(model.key, model.summary())
    return list(seen.values())


def instance_of(item) -> tuple[expected_mod.ClaimSpec, str, str, tuple[str, ...]]:
    """The claim spec, dataset, variant id and other parameters of a claim test item."""
    marker = item.get_closest_marker("claim")
    if marker is None:
        raise pytest.UsageError(f"{item.nodeid} uses `check` but has no @pytest.mark.claim(\"ID\")")
    spec: expected_mod.ClaimSpec = item.config.stash[CATALOGUE][marker.args[0]]
    callspec = getattr(item, "callspec", None)
    dataset = callspec.params.get("dataset") if callspec else None
    if dataset is None:
        raise pytest.UsageError(f"{item.nodeid}: a claim test must be parametrised over datasets (on_datasets)")
    variant = callspec.id  # every parameter of the instance, e.g. "cifar10" or "cifar10-vgg16"
    others = tuple(str(v) for k, v in sorted(callspec.params.items()) if k != "dataset")
    others += tuple(p for p in variant.split("-") if p != dataset and p not in others)
    return spec, dataset, variant, others


def _proxy(config, dataset: str) -> dict | None:
    """The proxy marker of ``dataset`` under the session's data root (advclaims.proxy), or None."""
    root = config.getoption("--repro-data-root")
    try:
        return data_mod.proxy_marker(dataset, Path(root).expanduser() if root else data_mod.default_root())
    except data_mod.DatasetCorrupt:
        return None


OWN_MODEL = "own model"  # the outcome of an instance on a user's model: its verdict is shown, never held


def _outcome(item, record: dict, expectation: expected_mod.Expectation) -> str:
    """passed, known finding, unstable (a verdict also_seen records: the evidence at this budget does not settle
    it), failed, "error" (the instance raised: no verdict), "proxy data" (no expected verdict is held against a
    proxy) or "own model" (expected/ records findings about the suite's own models, not about a user's)."""
    if record.get("error"):
        return "error"
    if record.get("proxy"):
        return "proxy data"
    if any((m.get("source") or {}).get("kind") != "trained" for m in record.get("models", [])):
        return OWN_MODEL
    outside = [v for v in record["values"] if record["paper_setting"] and v["within"] is False]
    if outside or not expectation.accepts(record["verdict"]):
        return "failed"
    if expectation.also_seen:
        return "unstable"
    return "passed" if expectation.verdict is Verdict.REPRODUCED else "known finding"


def _failure_lines(spec, record: dict, variant: str, dataset: str, budget: str) -> list[str]:
    lines = [f"{spec.id} on {variant} at the {budget} budget: verdict {record['verdict']}, "
             f"expected/{spec.paper}.toml expects {record['expected']}."]
    if record.get("unmeasurable"):
        lines.append(f"  not measurable: {record['unmeasurable']}")
    if record.get("scope"):
        lines.append(f"  {report_mod.scope_line(record)}")
    lines += [f"  {c['statistic']} = {report_mod._interval(c)}, claimed {c['comparator']} {c['threshold']}: "
              f"{c['verdict']}" for c in record["checks"] if c.get("value") is not None]
    lines += [f"  paper value {v['statistic']}: measured {v['measured']:.4g}, paper {v['paper']} ± {v['tolerance']}"
              for v in record["values"] if record["paper_setting"] and v["within"] is False]
    lines.append(f"If this is a real change, record it under [claims.{spec.id}.expect.\"{dataset}.{budget}\"] "
                 f"with its reason.")
    return lines


def _record(item, measurement: Measurement | None, unmeasurable: str | None = None, *,
            seeds: tuple[int, ...] | None = None, error: str | None = None) -> tuple[dict, list[str]]:
    """The report record of a claim instance (from its Measurement, from the reason it could not be measured,
    or from the one line of the error it raised) and its outcome; the record travels to the controller in the
    item's user properties."""
    spec, dataset, variant, others = instance_of(item)
    budget = item.config.getoption("--repro-budget")
    seeds = seeds if seeds is not None else seeds_of(item.config)
    models = _models_used(item)
    external = any(m["source"].get("kind") != "trained" for m in models)
    if measurement is not None:
        record = _evaluate(spec, measurement, dataset, budget, seeds, others, external=external)
    else:
        record = _unmeasured(spec, unmeasurable or error, dataset, budget, seeds, others, external=external)
    if error is not None:
        record.update(error=error, unmeasurable=None, notes=[f"error: {error}"])
    proxy = _proxy(item.config, dataset)
    record.update({"variant": variant, "nodeid": item.nodeid, "proxy": proxy, "models": models,
                   "variance": seeds_mod.coverage(seeds, external=external, scope=record["scope"]),
                   "wall_seconds": time.perf_counter() - item.stash.get(STARTED, time.perf_counter())})
    record["outcome"] = _outcome(item, record, spec.expectation(dataset, budget, others))
    if record["outcome"] == OWN_MODEL and record.get("expected_reason"):
        record["expected_reason"] = (f"expected/ records this about the suite's own models; it is not held "
                                     f"against yours: {record['expected_reason']}")
    return record, _failure_lines(spec, record, variant, dataset, budget)


def _publish(item, report, record: dict) -> None:
    prop = (PROPERTY, json.dumps(record, default=str))
    item.user_properties.append(prop)
    if report is not None and prop not in report.user_properties:
        report.user_properties.append(prop)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A claim test runs once per training seed; its Measurements pool into one verdict."""
    item = pyfuncitem
    if item.get_closest_marker("claim") is None or "check" not in item.fixturenames:
        return None
    seeds = seeds_of(item.config)
    item.stash[MEASUREMENTS] = []
    for k, seed in enumerate(seeds):
        kwargs = ({a: item.funcargs[a] for a in item._fixtureinfo.argnames} if k == 0
                  else seeds_mod.arguments_for_seed(item, seed))
        item.obj(**kwargs)
        if len(item.stash[MEASUREMENTS]) != k + 1:
            pytest.fail(f"{item.nodeid}: a claim test must hand its measurement to `check` once per run; it handed "
                        f"{len(item.stash[MEASUREMENTS]) - k} for seed {seed}", pytrace=False)
        if k == 0 and not seeds_mod.seed_dependent(item):
            break  # nothing in this test depends on the seed: one run is all there is
    measured = item.stash[MEASUREMENTS]
    _finish(item, seeds_mod.pool(measured, seeds[:len(measured)]), seeds[:len(measured)])
    return True


def _finish(item, measurement: Measurement, seeds: tuple[int, ...]) -> None:
    if item.config.getoption("--repro-preflight"):
        _record(item, measurement, seeds=seeds)  # every step up to the verdict runs; the verdict is not shown
        return
    record, failure = _record(item, measurement, seeds=seeds)
    _draw(record, measurement, item.config.getoption("--repro-report"))
    _publish(item, None, record)
    if record["outcome"] in ("known finding", "unstable"):
        pytest.xfail(f"{record['outcome']} ({record['claim']} {record['verdict']} on {record['dataset']}/"
                     f"{record['budget']}): {record['expected_reason']}")
    if record["outcome"] == "failed":
        pytest.fail("\n".join(failure), pytrace=False)


def _unmeasured(spec: expected_mod.ClaimSpec, reason: str, dataset: str, budget: str, seeds,
                variants: tuple[str, ...], *, external: bool = False) -> dict:
    """The record of an instance whose data do not allow its statistics: inconclusive, with the reason."""
    expectation = spec.expectation(dataset, budget, variants)
    checks = [{"statistic": c.statistic, "description": c.description, "comparator": c.comparator,
               "threshold": c.threshold, "paper": c.paper, "tolerance": c.tolerance, "value": None, "low": None,
               "high": None, "n": 0, "verdict": Verdict.INCONCLUSIVE.value} for c in spec.checks]
    return {
        "claim": spec.id, "paper": spec.paper, "title": spec.title, "source": spec.source,
        "dataset": dataset, "budget": budget, "seeds": list(seeds), "n": 0, "verdict": Verdict.INCONCLUSIVE.value,
        "expected": expectation.verdict.value, "expected_reason": expectation.reason,
        "also_seen": [v.value for v in expectation.also_seen], "checks": checks,
        "values": [], "paper_setting": spec.in_paper_setting(dataset, budget), "tables": {}, "tests": [],
        "notes": [f"not measurable: {reason}"], "unmeasurable": reason, "protocol_note": spec.protocol_note,
        "figures": [], "figure_errors": [], **_scope_fields(budget, len(seeds), external, None, 0),
    }


def _scope_fields(budget: str, k: int, external: bool, got: str | None, m: int) -> dict:
    """The claim record's scope (which one decided, the sources of variance it covers, why it is not the
    budget's own) and levels: reproduction at the nominal 95%, contradiction at 1 - 0.05/m."""
    scope, note = budgets_mod.get(budget).deciding_scope(k, external=external)
    if got is not None and got != scope:  # the statistics offer only the models scope: one run was pooled
        scope, k, note = got, 1, (f"the statistics come from one run (one seed, or nothing in the instance depends "
                                  f"on the seed): decided on {SCOPE_NAMES[got]}")
    covers = (f"training seeds ({k}), the method's random draws and the evaluation images" if scope == "recipe" else
              "the evaluation images and the method's draws on them" + (f"; the {k} trained models fixed" if k > 1
                                                                        else ""))
    return {"scope": scope, "scope_name": SCOPE_NAMES[scope], "covers": covers, "scope_note": note,
            "level": 0.95, "contradiction_level": contradiction_level(m), "deciding_checks": m}


def evaluate(claim_id: str, measurement: Measurement, *, dataset: str = "fashion_mnist", budget: str = "smoke",
             expected_dir: str | Path | None = None, external: bool = False) -> dict:
    """The record a claim instance would get from ``measurement`` (its "verdict" above all), outside a pytest
    run: for tests that feed an analysis a case where the claim is false and show the verdict changes. The
    number of seeds is read off the statistics (a pooled one keeps its per-seed estimates)."""
    spec = expected_mod.load(expected_dir)[claim_id]
    k = max([len(e.per_seed) for e in measurement.statistics.values()] + [1])
    return _evaluate(spec, measurement, dataset, budget, tuple(range(k)), external=external)


UNINFORMATIVE = "uninformative"  # a check whose statistic cannot vary (saturated): shown, never deciding;
# a zero-width interval of a non-exact statistic (degenerate resamples) is inconclusive: it blocks reproduction


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


def _evaluate(spec: expected_mod.ClaimSpec, m: Measurement, dataset: str, budget: str, seeds,
              variants: tuple[str, ...] = (), *, external: bool = False) -> dict:
    for c in spec.checks:
        if c.statistic not in m.statistics:
            raise KeyError(f"{spec.id}: the analysis measured {sorted(m.statistics)} but expected/{spec.paper}.toml "
                           f"checks {c.statistic!r}")
    scope, _ = budgets_mod.get(budget).deciding_scope(len(seeds), external=external)
    checks, got, n_deciding = _checks(spec, m.statistics, scope)
    in_setting = spec.in_paper_setting(dataset, budget)
    values = []
    for v in spec.values:
        measured = m.values.get(v.statistic)
        within = None if measured is None else abs(measured - v.paper) <= v.tolerance
        values.append({"statistic": v.statistic, "description": v.description, "paper": v.paper,
                       "tolerance": v.tolerance, "measured": measured, "within": within})
    expectation = spec.expectation(dataset, budget, variants)
    sensitivity, depends = _sensitivity(spec, m, checks, scope)
    return {
        "claim": spec.id, "paper": spec.paper, "title": spec.title, "source": spec.source,
        "dataset": dataset, "budget": budget, "seeds": list(seeds), "n": m.n,
        "verdict": _combined(checks), "depends_on": depends, "sensitivity": sensitivity,
        "expected": expectation.verdict.value, "expected_reason": expectation.reason,
        "also_seen": [v.value for v in expectation.also_seen],
        "checks": checks, "values": values, "paper_setting": in_setting, "tables": m.tables,
        "tests": [{"name": k, **vars(t)} for k, t in m.tests.items()], "notes": m.notes,
        "protocol_note": spec.protocol_note, "figures": [], "figure_errors": [],
        **_scope_fields(budget, len(seeds), external, got, n_deciding),
    }


def _draw(record: dict, m: Measurement, report_dir: str | None) -> None:
    if not report_dir:
        return
    for name, draw in m.figures.items():
        rel = Path("figures") / f"{record['claim']}_{record.get('variant', record['dataset'])}_{name}.png"
        try:
            draw(Path(report_dir) / rel)
            record["figures"].append(str(rel))
        except Exception as err:  # a broken figure must not lose the measured verdict
            record["figure_errors"].append(f"{rel}: {type(err).__name__}: {err}")
            warnings.warn(f"figure {rel} could not be drawn: {err}")


# errors whose message already says what happened and what to do: shown as one line, no traceback
_USER_ERRORS = (NonFiniteLogits, TrainingDiverged, ModelUnhealthy, external_mod.ModelRefused, data_mod.DatasetCorrupt,
                data_mod.DatasetMissing)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if (report.failed and call.excinfo is not None and call.excinfo.errisinstance(Unmeasurable)
            and item.get_closest_marker("claim") is not None and call.when in ("setup", "call")):
        _unmeasurable_report(item, report, str(call.excinfo.value))
    elif report.failed and call.excinfo is not None and call.excinfo.errisinstance(_USER_ERRORS):
        err = call.excinfo.value
        report.longrepr = f"{item.nodeid}: {type(err).__name__}: {err}"
    return report


def _unmeasurable_report(item, report, reason: str) -> None:
    """A claim whose data do not allow its statistics is inconclusive with that reason: recorded like any
    verdict, and the test passes, xfails or fails by expected/ as a measured one would."""
    item.stash[CHECKED] = True
    if item.config.getoption("--repro-preflight"):
        from .preflight import (
            note,  # registered as a plugin of its own (pytest_plugins): imported by pytest first
        )
        note(item, f"not measurable at preflight sizes: {reason}")
        if report.when == "call":
            report.outcome, report.longrepr = "passed", None
        else:
            report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1] or 0, reason)
        return
    record, failure = _record(item, None, reason)
    _publish(item, report, record)
    if record["outcome"] == "failed":
        report.longrepr = "\n".join(failure)
    elif record["outcome"] in ("known finding", "unstable"):
        report.outcome, report.wasxfail = "skipped", f"{record['outcome']} ({record['claim']} inconclusive): {reason}"
    elif report.when == "call":
        report.outcome, report.longrepr = "passed", None
    else:  # setup could not finish, so the test body cannot run: shown as a skip that carries the reason
        report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1] or 0,
                                                      f"{record['outcome']}: not measurable: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if item.get_closest_marker("claim") is not None and not item.stash.get(CHECKED, False):
        pytest.fail(f"{item.nodeid}: a claim test must hand its measurement to `check`; it passed without a verdict",
                    pytrace=False)
    return result
