"""Records of every claim instance (also from xdist workers) become report.json, report.md and figures,
saved runs and their comparison, and the terminal table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from . import accel as accel_mod
from . import report as report_mod
from .options import accel_of, device_of, storage_of, worker_threads
from .verdicts import PROPERTY

RECORDS = pytest.StashKey[list]()


COMPARISON = pytest.StashKey[list]()


def pytest_runtest_logreport(report):
    # the record rides on the call report, or on the setup report of an instance whose setup found it
    # unmeasurable; the teardown report repeats the item's properties: one record per node id
    for name, value in report.user_properties:
        if name == PROPERTY:
            record = json.loads(value)
            _session_records[record["nodeid"]] = record


_session_records: dict[str, dict] = {}


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the report from forwarded records
    records = list(_session_records.values())
    _session_records.clear()
    if config.getoption("--repro-preflight"):
        return  # no verdicts: advclaims.preflight writes its own table
    config.stash[RECORDS] = records
    if not records:
        return
    device = device_of(config)
    report = report_mod.build(records, budget=config.getoption("--repro-budget"), argv=sys.argv,
                              device=str(device), determinism=accel_mod.determinism(accel_of(config, device),
                                                                                    worker_threads(config)))
    out = config.getoption("--repro-report")
    if out:
        report_mod.write(out, report)
    against = config.getoption("--repro-compare")
    if against is not None:
        try:
            path = report_mod.find_run(storage_of(config), against)
            changes = report_mod.compare(json.loads(path.read_text()), report)
            config.stash[COMPARISON] = report_mod.format_changes(changes, str(path))
            if config.getoption("--repro-compare-fail") and any(c["kind"] == "verdict flipped" for c in changes):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        except (FileNotFoundError, ValueError) as err:
            config.stash[COMPARISON] = [f"comparison skipped: {err}"]
    if config.getoption("--repro-autosave"):
        path = report_mod.save_run(storage_of(config), report)
        config.stash[COMPARISON] = config.stash.get(COMPARISON, []) + [f"run saved as {path}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    records = config.stash.get(RECORDS, [])
    if not records:
        return
    tr = terminalreporter
    tr.section("advclaims: claims")
    for r in sorted(records, key=lambda r: (report_mod._claim_order(r["claim"]), r["dataset"])):
        c = report_mod.headline(r)
        more = f" +{len(r['checks']) - 1}" if len(r["checks"]) > 1 else ""
        depends = f" [depends on {', '.join(r['depends_on'])}]" if r.get("depends_on") else ""
        tr.write_line(f"{r['claim']:<6} {r.get('variant', r['dataset']):<14} {r['verdict']:<13} {r['outcome']:<14} "
                      f"{c['statistic']}{more} = {report_mod._interval(c)} ({c['comparator']} {c['threshold']:g})"
                      f"{depends}")
    out = config.getoption("--repro-report")
    if out:
        tr.write_line(f"report: {Path(out) / 'report.md'}")
    for line in config.stash.get(COMPARISON, []):
        tr.write_line(line)
