"""Records of every claim instance (also from xdist workers) become report.json, report.md and figures,
saved runs and their comparison, and the terminal table. An instance that raised (any exception, in setup or
in its body) is a record too: an error row with the exception's one line, counted in the summary; so is an
instance whose xdist worker died (killed for memory, a segfault), which sent no record (``crash_record``)."""

from __future__ import annotations

import ast
import json
import sys
import warnings
from pathlib import Path

import pytest

from . import accel as accel_mod
from . import data as data_mod
from . import external as external_mod
from .health import ModelUnhealthy
from . import report as report_mod
from .options import CATALOGUE, accel_of, device_of, seeds_of, storage_of, worker_threads
from .verdicts import PROPERTY, _proxy, _publish, _record, _unmeasured

RECORDS = pytest.StashKey[list]()
_ONE_LINE = (external_mod.ModelRefused, ModelUnhealthy)  # errors whose message already says what to do


COMPARISON = pytest.StashKey[list]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A claim instance that failed without a record (it raised, in setup or in its body) gets an error record;
    outermost, so it sees the report after advclaims.verdicts has turned unmeasurable data into a verdict."""
    report = yield
    if (report.failed and call.when in ("setup", "call") and item.get_closest_marker("claim") is not None
            and not item.config.getoption("--repro-preflight")
            and not any(name == PROPERTY for name, _ in item.user_properties)):
        try:
            record, _ = _record(item, None, error=error_line(call.excinfo, report))
        except Exception as err:  # a broken record must not hide the instance's own error
            warnings.warn(f"advclaims: no error row for {item.nodeid}: {type(err).__name__}: {err}")
        else:
            _publish(item, report, record)
    return report


ERROR_CHARS = 400  # an error row keeps this much of an exception's first line (a user's one-line error: all of it)


def error_line(excinfo, report) -> str:
    """One line for an error row: the exception's type, its first line, and where it was raised. A one-line
    error of the suite's (a refused model, stages missing, the health gate) is kept whole: it names what to
    pass; any other message is cut, as a traceback is."""
    if excinfo is None:
        text = str(report.longrepr).strip().splitlines()
        return text[-1][:300] if text else "failed"
    err = excinfo.value
    first = (str(err).strip().splitlines() or [""])[0]
    if not isinstance(err, _ONE_LINE):
        first = first[:ERROR_CHARS]
    where = ""
    if not isinstance(err, _ONE_LINE):
        entry = excinfo.traceback[-1]
        where = f" (at {Path(str(entry.path)).name}:{entry.lineno + 1})"
    return f"{type(err).__name__}: {first}{where}"


def pytest_runtest_logreport(report):
    # the record rides on the call report, or on the setup report of an instance whose setup found it
    # unmeasurable; the teardown report repeats the item's properties: one record per node id
    for name, value in report.user_properties:
        if name == PROPERTY:
            record = json.loads(value)
            _session_records[record["nodeid"]] = record
    if report.failed and "crashed while running" in str(report.longrepr):
        # pytest-xdist's report for an instance whose worker died (as advclaims.preflight reads it for its rows):
        # the worker sent no record; sessionfinish turns a claim instance's into an error row
        _crashed[report.nodeid] = str(report.longrepr).strip().splitlines()[0][:300]


_session_records: dict[str, dict] = {}
_crashed: dict[str, str] = {}  # node id -> xdist's line, for instances whose worker died


def _claim_of(rootpath: Path, nodeid: str) -> str | None:
    """The claim id of a test by its node id, read off its ``@pytest.mark.claim("ID")`` in the source (the
    controller of an xdist run has no items to ask), or None when it has none."""
    parts = nodeid.split("::")
    try:
        tree = ast.parse((Path(rootpath) / parts[0]).read_text())
    except (OSError, SyntaxError, ValueError):
        return None

    def claim(node) -> str | None:
        for d in getattr(node, "decorator_list", []):
            if (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "claim" and d.args
                    and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str)):
                return d.args[0].value
        return None

    scope, found = tree.body, None
    for name in [p.split("[")[0] for p in parts[1:]]:
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            return None
        found = claim(node) or found
        scope = getattr(node, "body", [])
    return found


def crash_record(config, nodeid: str, line: str) -> dict | None:
    """The error row of a claim instance whose xdist worker died (killed for memory, a segfault) and so sent no
    record; None for a node that is no claim instance."""
    cid = _claim_of(config.rootpath, nodeid)
    catalogue = config.stash.get(CATALOGUE, {})
    if cid not in catalogue:
        return None
    variant = nodeid.rsplit("[", 1)[1].rstrip("]") if nodeid.endswith("]") else ""
    parts = variant.split("-")
    dataset = next((p for p in parts if p in data_mod.DATASETS), None)
    if dataset is None:
        return None
    error = (f"{line}: the process died (killed for memory or a segfault, as a rule) and the instance sent no "
             f"record; run it alone to see why")
    budget = config.getoption("--repro-budget")
    seeds = seeds_of(config)
    own = bool(config.getoption("--repro-model"))
    record = _unmeasured(catalogue[cid], error, dataset, budget, seeds, tuple(p for p in parts if p != dataset),
                         external=own)
    record.update(error=error, unmeasurable=None, notes=[f"error: {error}"], variant=variant, nodeid=nodeid,
                  proxy=_proxy(config, dataset), models=[], variance=None, wall_seconds=0.0, outcome="error",
                  crashed=True)
    return record


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the report from forwarded records
    crashed = dict(_crashed)
    _crashed.clear()
    if config.getoption("--repro-preflight"):
        _session_records.clear()
        return  # no verdicts: advclaims.preflight writes its own table
    for nodeid, line in crashed.items():
        if nodeid not in _session_records:
            try:
                record = crash_record(config, nodeid, line)
            except Exception as err:  # a broken row must not hide the others
                warnings.warn(f"advclaims: no error row for {nodeid}: {type(err).__name__}: {err}")
                record = None
            if record is not None:
                _session_records[nodeid] = record
    records = list(_session_records.values())
    _session_records.clear()
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


def model_lines(records: list[dict]) -> list[str]:
    """For runs on a user's model: each model of the suite's own it was compared with (a partner the suite
    trained or loaded), and what the health gate's reference probe held each user's model against."""
    lines, seen = [], set()
    for r in records:
        models = r.get("models") or []
        if not any((m.get("source") or {}).get("kind") != "trained" for m in models):
            continue
        for m in models:
            src = m.get("source") or {}
            if m["key"] in seen:
                continue
            seen.add(m["key"])
            if src.get("kind") == "trained":
                lines.append(f"{r['claim']} on {r.get('variant', r['dataset'])}: compared your model with the suite's "
                             f"own {m['label']} ({m.get('arch')} on {m.get('dataset')}, trained at the "
                             f"{src.get('budget')} budget, store key {m['key']}): no --repro-model gave that role")
            elif (src.get("reference") or {}).get("clean_accuracy") is not None:
                lines.append(f"your {m['label']}: clean {m.get('clean_accuracy') or float('nan'):.1%}, held against "
                             f"{report_mod.reference_text(src['reference'])} by the health gate's reference probe")
    return lines


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
    for line in model_lines(records):
        tr.write_line(line)
    s = report_mod.summary(records)
    if s.get("errors"):
        tr.write_line(f"{s['errors']} of {s['total']} instances raised an error (outcome error): no verdict; "
                      f"the report has a row for each with its one line")
    tr.write_line(report_mod.counts_line(s))
    out = config.getoption("--repro-report")
    if out:
        tr.write_line(f"report: {Path(out) / 'report.md'}")
    for line in config.stash.get(COMPARISON, []):
        tr.write_line(line)
