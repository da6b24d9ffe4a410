"""--repro-preflight: run the selected claim instances in a budget's shapes, in minutes, with no verdicts.

Architectures, widths, batch sizes and analysis sizes are the budget's own; the schedule and the samples are
cut to the least that lets every step run (``Budget.for_preflight``, ``advclaims.iterations``). The health
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
from pathlib import Path

import pytest
import torch

from . import iterations

ROWS = pytest.StashKey[list]()
PROPERTY = "advclaims-preflight"
STATE = pytest.StashKey[dict]()
_rows: dict[str, dict] = {}


def enabled(config) -> bool:
    return bool(config.getoption("--repro-preflight", False))


def pytest_configure(config):
    if enabled(config):
        iterations.set_cap(iterations.PREFLIGHT_ITERATIONS)


def pytest_unconfigure(config):
    # the cap is process-wide: a preflight session run inside another (pytester) must not leave it behind
    if enabled(config):
        iterations.set_cap(None)


def _rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _cuda_device(config) -> torch.device | None:
    """This worker's GPU (options.device_of: gwN's own, set current there), or None off CUDA."""
    if not torch.cuda.is_available():
        return None
    from .options import device_of

    dev = device_of(config)
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


def pytest_runtest_logreport(report):
    for name, value in report.user_properties:
        if name == PROPERTY:
            row = json.loads(value)
            _rows[row["nodeid"]] = row
    if report.failed and report.nodeid not in _rows and "crashed while running" in str(report.longrepr):
        # pytest-xdist's report for an instance whose worker died (killed for memory, as a rule): the worker
        # sent no row, and the instance must not vanish from the preflight's count
        test = report.nodeid.split("::")[-1]
        _rows[report.nodeid] = {
            "nodeid": report.nodeid, "claim": "?", "instance": test, "outcome": "error",
            "note": f"{str(report.longrepr).strip().splitlines()[0][:200]} (a killed worker: out of memory?)",
            "wall_seconds": 0.0, "peak_memory_mib": None, "memory": "unknown: the worker died"}


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workerinput") or not enabled(config):
        return
    rows = sorted(_rows.values(), key=lambda r: r["nodeid"])
    _rows.clear()
    config.stash[ROWS] = rows
    out = config.getoption("--repro-report")
    if out and rows:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        summary = _summary(rows, config)
        (folder / "preflight.json").write_text(json.dumps({"summary": summary, "instances": rows}, indent=2))
        (folder / "preflight.md").write_text("\n".join(_markdown(rows, summary)) + "\n")


def _summary(rows: list[dict], config) -> dict:
    return {"budget": config.getoption("--repro-budget"), "instances": len(rows),
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


def pytest_terminal_summary(terminalreporter, config):
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    tr = terminalreporter
    tr.section("advclaims: preflight (no verdicts)")
    for r in rows:
        memory = "?" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.1f}"
        tr.write_line(f"{r['claim']:<6} {r['instance']:<22} {r['outcome']:<8} {r['wall_seconds']:>8.1f} s "
                      f"{memory:>9} MiB  {r['note'][:100]}")
    s = _summary(rows, config)
    tr.write_line(f"{s['ran']} ran, {s['errors']} errors, {s['skipped']} skipped; peak memory {s['peak_memory_mib']} "
                  f"MiB ({next((r['memory'] for r in rows if r['peak_memory_mib'] is not None), 'unknown')})")
