"""Per claim instance: when it started, what it raised, whether it handed a Measurement over. An instance whose
data do not allow its statistics is inconclusive with its reason (``Unmeasurable``); one that raised anything
else, in setup or in its body, is an error row with the exception's one line; both are records like any other."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from advclaims import accel as accel_mod
from advclaims import data as data_mod
from advclaims.attacks._common import NonFiniteLogits
from advclaims.checkpoints import external as external_mod
from advclaims.checkpoints.health import ModelUnhealthy
from advclaims.checkpoints.training import TrainingDiverged
from advclaims.plugin import reporting
from advclaims.plugin.stash import CHECKED, COMPILE_COUNTERS, RECORD, SEED_PART, session_of
from advclaims.verdict import records
from advclaims.verdict.estimate import Unmeasurable

# errors whose message already says what happened and what to do: shown as one line, no traceback
_USER_ERRORS = (NonFiniteLogits, TrainingDiverged, ModelUnhealthy, external_mod.ModelRefused, external_mod.StagesMissing,
                external_mod.NoFeatureSplit, data_mod.DatasetCorrupt, data_mod.DatasetMissing,
                records.MeasurementMismatch)


def _is_claim(item) -> bool:
    return item.get_closest_marker("claim") is not None


def pytest_runtest_setup(item):
    if _is_claim(item):
        session_of(item.config).started(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if _is_claim(item) and not item.stash.get(CHECKED, False):
        pytest.fail(f"{item.nodeid}: a claim test must hand its measurement to `check`; it passed without a verdict",
                    pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "teardown" and _is_claim(item):
        _send_compile_counters(report)
    if not report.failed or call.excinfo is None or call.when not in ("setup", "call"):
        return report
    if call.excinfo.errisinstance(_USER_ERRORS):
        report.longrepr = f"{item.nodeid}: {type(call.excinfo.value).__name__}: {call.excinfo.value}"
    if not _is_claim(item) or any(name in (RECORD, SEED_PART) for name, _ in item.user_properties):
        return report
    session = session_of(item.config)
    if session.settings.preflight:
        if call.excinfo.errisinstance(Unmeasurable):
            _unmeasurable_in_preflight(item, report, str(call.excinfo.value))
        return report
    try:
        if call.excinfo.errisinstance(Unmeasurable):
            _unmeasurable(session, item, report, str(call.excinfo.value))
        else:
            _errored(session, item, report, reporting.error_line(call.excinfo, report))
    except Exception as err:  # a broken record must not hide the instance's own error
        warnings.warn(f"advclaims: no record for {item.nodeid}: {type(err).__name__}: {err}")
    return report


def _unmeasurable(session, item, report, reason: str) -> None:
    """A claim whose data do not allow its statistics is inconclusive with that reason: recorded like any
    verdict, and the test passes, xfails or fails by expected/ as a measured one would."""
    item.stash[CHECKED] = True
    seed = session.seed_of(item)
    if seed is not None:  # one seed of several: the instance is decided when every seed is in
        session.publish(item, report, SEED_PART, _part(session, item, seed, unmeasurable=reason))
        _passed_or_skipped(item, report, f"not measurable on seed {seed}: {reason}")
        return
    record = records.unmeasured(session.instance(item), reason)
    session.publish(item, report, RECORD, record.as_dict())
    if record.outcome is records.Outcome.FAILED:
        report.longrepr = "\n".join(record.failure_lines())
    elif record.outcome.xfails:
        report.outcome, report.wasxfail = "skipped", f"{record.outcome} ({record.claim} inconclusive): {reason}"
    else:
        _passed_or_skipped(item, report, f"{record.outcome}: not measurable: {reason}")


def _errored(session, item, report, line: str) -> None:
    seed = session.seed_of(item)
    if seed is not None:
        session.publish(item, report, SEED_PART, _part(session, item, seed, error=line))
        return
    session.publish(item, report, RECORD, records.errored(session.instance(item), line).as_dict())


def _part(session, item, seed: int, **why) -> dict:
    instance = session.instance(item, seeds=(seed,))
    return {"instance": instance.nodeid, "seed": seed, "claim": instance.spec.id, "dataset": instance.dataset,
            "variant": instance.variant, "others": list(instance.others), "models": list(instance.models),
            "wall_seconds": 0.0, "figures": [], "figure_errors": [], **why}


def _passed_or_skipped(item, report, reason: str) -> None:
    if report.when == "call":
        report.outcome, report.longrepr = "passed", None
    else:  # setup could not finish, so the test body cannot run: shown as a skip that carries the reason
        report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1] or 0, reason)


def _unmeasurable_in_preflight(item, report, reason: str) -> None:
    from advclaims.plugin.preflight import note

    item.stash[CHECKED] = True
    note(item, f"not measurable at preflight sizes: {reason}")
    _passed_or_skipped(item, report, reason)


def _send_compile_counters(report) -> None:
    """An xdist worker's torch.compile counters so far, on each claim instance's teardown report: the controller
    keeps each worker's latest (``pytest_runtest_logreport``), and the report's accel lines sum them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    counters = accel_mod.compile_counters() if worker else {}
    if counters:
        report.user_properties.append((COMPILE_COUNTERS, json.dumps({"worker": worker, "counters": counters})))


def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a worker's own reports: the controller reads them
    for name, value in getattr(report, "user_properties", ()):
        if name == COMPILE_COUNTERS:
            sent = json.loads(value)
            accel_mod.note_worker_compile(sent["worker"], sent["counters"])
