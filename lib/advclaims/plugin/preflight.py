"""--repro-preflight: run the selected claim instances in a budget's shapes, in minutes, with no verdicts.

Architectures, widths, batch sizes and analysis sizes are the budget's own; the schedule and the samples are
cut to the least that lets every step run (``Budget.for_preflight``: every iteration count capped too). The health
gate runs and is reported, not enforced. Everything goes to ``<store>/preflight``, apart from real
checkpoints. Per instance the preflight reports ran / error, wall time and peak memory (CUDA: the peak
allocated on the instance's device; CPU: the process's peak resident set so far), in the terminal and, with
``--repro-report DIR``, in ``DIR/preflight.json`` and ``DIR/preflight.md``.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import pytest
import torch

from advclaims.plugin.reporting import claim_of
from advclaims.plugin.stash import PREFLIGHT_ROW as PROPERTY, SESSION, session_of

STATE = pytest.StashKey[dict]()


def enabled(config) -> bool:
    session = config.stash.get(SESSION, None)  # None: the session could not start (a usage error)
    return session is not None and session.settings.preflight


def _rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _cuda_device(config) -> torch.device | None:
    """This worker's GPU (the session's device: gwN's own, set current there), or None off CUDA."""
    if not torch.cuda.is_available():
        return None
    dev = session_of(config).settings.device
    return torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index) \
        if dev.type == "cuda" else None


def pytest_runtest_setup(item):
    if not enabled(item.config) or item.get_closest_marker("claim") is None:
        return
    cuda = _cuda_device(item.config)
    if cuda is not None:
        torch.cuda.reset_peak_memory_stats(cuda)
    item.stash[STATE] = {"start": time.perf_counter(), "outcome": "ran", "note": ""}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    state = item.stash.get(STATE, None)
    if state is None:
        return report
    if report.failed and state["outcome"] == "ran":
        state["outcome"] = "error"
        crash = getattr(report.longrepr, "reprcrash", None)
        lines = str(report.longrepr).strip().splitlines()
        state["note"] = (crash.message if crash is not None else lines[-1] if lines else "").splitlines()[0][:300]
    elif report.skipped and state["outcome"] == "ran" and call.when == "setup" and not state.get("noted"):
        state["outcome"], state["note"] = "skipped", str(report.longrepr[-1] if isinstance(report.longrepr, tuple)
                                                         else report.longrepr)[:300]
    if call.when == "teardown":
        cuda = _cuda_device(item.config)
        row = {"nodeid": item.nodeid, "claim": item.get_closest_marker("claim").args[0],
               "instance": getattr(getattr(item, "callspec", None), "id", ""), "outcome": state["outcome"],
               "note": state["note"], "wall_seconds": round(time.perf_counter() - state["start"], 2),
               "peak_memory_mib": round(torch.cuda.max_memory_allocated(cuda) / (1 << 20) if cuda is not None
                                        else _rss_mib(), 1),
               "memory": f"CUDA peak allocated on {cuda}" if cuda is not None else "process peak RSS so far"}
        report.user_properties.append((PROPERTY, json.dumps(row)))
    return report


def note(item, text: str) -> None:
    """A remark on the instance's row (e.g. why it could not be measured), shown beside 'ran'."""
    state = item.stash.get(STATE, None)
    if state is not None:
        state["note"], state["noted"] = text[:300], True


def collect(session, report) -> None:
    """The controller's side: a row per instance into the session (called from its logreport)."""
    rows = session.preflight_rows
    for name, value in report.user_properties:
        if name == PROPERTY:
            row = json.loads(value)
            rows[row["nodeid"]] = row
    if report.failed and report.nodeid not in rows and "crashed while running" in str(report.longrepr):
        # pytest-xdist's report for an instance whose worker died (killed for memory, as a rule): the worker
        # sent no row, and the instance must not vanish from the preflight's count
        test = report.nodeid.split("::")[-1]
        rows[report.nodeid] = {
            "nodeid": report.nodeid, "claim": claim_of(session.config.rootpath, report.nodeid) or "?",
            "instance": test, "outcome": "error",
            "note": f"{str(report.longrepr).strip().splitlines()[0][:200]} (a killed worker: out of memory?)",
            "wall_seconds": 0.0, "peak_memory_mib": None, "memory": "unknown: the worker died"}


def finish(session) -> None:
    """The controller's side at the end: the rows sorted, and with --repro-report DIR, preflight.json/.md."""
    rows = sorted(session.preflight_rows.values(), key=lambda r: r["nodeid"])
    out = session.settings.report_dir
    if out and rows:
        out.mkdir(parents=True, exist_ok=True)
        summary = _summary(rows, session)
        (out / "preflight.json").write_text(json.dumps({"summary": summary, "instances": rows}, indent=2))
        (out / "preflight.md").write_text("\n".join(_markdown(rows, summary)) + "\n")


def _summary(rows: list[dict], session) -> dict:
    return {"budget": session.budget.name, "instances": len(rows),
            "ran": sum(r["outcome"] == "ran" for r in rows), "errors": sum(r["outcome"] == "error" for r in rows),
            "skipped": sum(r["outcome"] == "skipped" for r in rows),
            "wall_seconds_sum": round(sum(r["wall_seconds"] for r in rows), 1),
            "peak_memory_mib": max((r["peak_memory_mib"] for r in rows if r["peak_memory_mib"] is not None),
                                   default=0.0)}


def _markdown(rows: list[dict], summary: dict) -> list[str]:
    lines = [f"# advclaims preflight ({summary['budget']} budget's shapes; no verdicts)", "",
             f"{summary['ran']} ran, {summary['errors']} errors, {summary['skipped']} skipped of "
             f"{summary['instances']} instances; {summary['wall_seconds_sum']} s of instance time; peak memory "
             f"{summary['peak_memory_mib']} MiB", "",
             "| claim | instance | outcome | wall s | peak MiB | note |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['instance']} | {r['outcome']} | {r['wall_seconds']} | "
              f"{'?' if r['peak_memory_mib'] is None else r['peak_memory_mib']} | "
              f"{r['note'].replace('|', '/')} |" for r in rows]
    return lines


def terminal_summary(session, tr) -> None:
    rows = sorted(session.preflight_rows.values(), key=lambda r: r["nodeid"])
    if not rows:
        return
    tr.section("advclaims: preflight (no verdicts)")
    for r in rows:
        memory = "?" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.1f}"
        tr.write_line(f"{r['claim']:<6} {r['instance']:<22} {r['outcome']:<8} {r['wall_seconds']:>8.1f} s "
                      f"{memory:>9} MiB  {r['note'][:100]}")
    s = _summary(rows, session)
    tr.write_line(f"{s['ran']} ran, {s['errors']} errors, {s['skipped']} skipped; peak memory {s['peak_memory_mib']} "
                  f"MiB ({next((r['memory'] for r in rows if r['peak_memory_mib'] is not None), 'unknown')})")
