"""Measured seconds per claim instance, so that a parallel run starts its longest instances first.

pytest-xdist hands items out in collection order; an instance that starts last and runs long (LP-13's sweep trains
four models) keeps one worker busy after the other has finished. ``claims/durations.json`` holds each instance's wall
seconds from a measured run (``advclaims durations REPORT.json`` writes it, as pytest-split keeps its
``.test_durations``), per budget. Collection puts claim instances first, longest first; an instance the file does not
know counts as the median of those it does. Order only: no statistic depends on it. pytest-xdist's default load
scheduling hands each worker a block of consecutive items first, which would give one worker every long instance;
``-n 2 --maxschedchunk 1`` (scripts/main.sh, scripts/test.sh) lets each worker take the next item when it is free.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

FILE = "durations.json"


def from_report(report: dict) -> dict[str, float]:
    """Instance node id -> wall seconds (summed over seeds) of a report.json's claims."""
    return {r["nodeid"]: round(float(r.get("wall_seconds", 0.0)), 1) for r in report.get("claims", [])
            if r.get("nodeid")}


def write(path: str | Path, report: dict) -> Path:
    """Merge a report's instance seconds into ``path`` under the report's budget; returns the path."""
    path = Path(path)
    table = json.loads(path.read_text()) if path.exists() else {}
    table.setdefault(report["budget"], {}).update(from_report(report))
    table[report["budget"]] = dict(sorted(table[report["budget"]].items()))
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


def load(path: str | Path, budget: str) -> dict[str, float]:
    """The instance seconds of ``budget`` (the smoke budget's when the file has none for it: relative costs are what
    ordering needs); {} when the file is missing or unreadable."""
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return table.get(budget) or table.get("smoke") or {}


def longest_first(ids: list[str], seconds: dict[str, float]) -> list[int]:
    """The positions of ``ids`` ordered by descending known seconds (unknown: the median; ties keep their order)."""
    known = [seconds[i] for i in ids if i in seconds]
    default = statistics.median(known) if known else 0.0
    return sorted(range(len(ids)), key=lambda k: -seconds.get(ids[k], default))
