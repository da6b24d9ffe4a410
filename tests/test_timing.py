"""The per-instance profile (advclaims.timing): phases are exclusive, training absorbs what it runs, the rest of an
instance's wall time is its analysis, and a run's report carries the profile and its totals."""

from __future__ import annotations

import time

import pytest

from advclaims import timing
from advclaims.verdict import report as report_mod

pytestmark = pytest.mark.unit


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_nested_phases_take_their_time_out_of_the_enclosing_one():
    timing.reset()
    start = time.perf_counter()
    with timing.phase("store"):
        _busy(0.05)
        with timing.phase("attacks"):
            _busy(0.1)
        _busy(0.05)
    with timing.phase("bootstrap"):
        _busy(0.05)
    _busy(0.05)
    wall = time.perf_counter() - start
    p = timing.profile(wall)
    assert p["attacks"] == pytest.approx(0.1, abs=0.03)
    assert p["store"] == pytest.approx(0.1, abs=0.03)
    assert p["bootstrap"] == pytest.approx(0.05, abs=0.03)
    assert p["analysis"] == pytest.approx(0.05, abs=0.03)
    assert sum(p[k] for k in timing.PHASES) == pytest.approx(wall, abs=0.15)


def test_training_keeps_the_attacks_it_runs():
    timing.reset()
    with timing.phase("training"):
        with timing.phase("attacks"):
            _busy(0.05)
    p = timing.profile(0.05)
    assert p["attacks"] == 0.0 and p["training"] == pytest.approx(0.05, abs=0.03)


def test_an_unknown_phase_is_refused_and_reset_forgets_the_last_instance():
    with pytest.raises(ValueError, match="unknown phase"):
        with timing.phase("training loop"):
            pass
    with timing.phase("attacks"):
        _busy(0.02)
    timing.count("bootstrap_resamples", 2000)
    timing.reset()
    p = timing.profile(0.0)
    assert all(p[k] == 0.0 for k in timing.PHASES) and p["counts"] == {}


def test_the_bootstrap_counts_its_seconds_and_resamples():
    import numpy as np

    from advclaims.verdict import stats

    timing.reset()
    stats.bootstrap(np.mean, np.arange(50.0), n_resamples=500)
    p = timing.profile(0.0)
    assert p["counts"]["bootstrap_resamples"] == 500 and p["bootstrap"] >= 0.0


def test_seeds_add_and_the_report_shows_where_the_time_went():
    a = {"training": 1.0, "attacks": 2.0, "store": 0.5, "analysis": 3.0, "bootstrap": 0.25,
         "counts": {"bootstrap_resamples": 2000}}
    total = timing.add([a, a])
    assert total["attacks"] == 4.0 and total["counts"]["bootstrap_resamples"] == 4000
    records = [{"claim": "LP-7", "variant": "fashion_mnist", "dataset": "fashion_mnist", "wall_seconds": 6.75,
                "profile": a}]
    totals = report_mod.profile_totals(records)
    assert totals == {"training": 1.0, "attacks": 2.0, "store": 0.5, "analysis": 3.0, "bootstrap": 0.2,
                      "instance_seconds": 6.8, "bootstrap_resamples": 2000}
    lines = report_mod._profile_lines({"claims": records, "profile": totals})
    assert "## Where the time went" in lines
    assert any(line.startswith("| LP-7 | fashion_mnist | 6.8 | 1.0 | 2.0 | 0.5 | 3.0 |") for line in lines)


def test_instances_run_longest_first_by_the_measured_durations(tmp_path):
    from advclaims.cli import main as cli
    from advclaims.verdict import durations

    report = {"budget": "smoke", "claims": [{"nodeid": "a", "wall_seconds": 5.0}, {"nodeid": "b", "wall_seconds": 50.0},
                                            {"nodeid": "c", "wall_seconds": 20.0}]}
    path = tmp_path / "report.json"
    path.write_text(__import__("json").dumps(report))
    into = tmp_path / "durations.json"
    assert cli(["durations", str(path), "--into", str(into)]) == 0
    seconds = durations.load(into, "paper")  # no paper times: the smoke budget's order stands in
    assert seconds == {"a": 5.0, "b": 50.0, "c": 20.0}
    # unknown "d" counts as the median (20 s) and keeps its place among equals
    assert durations.longest_first(["a", "b", "c", "d"], seconds) == [1, 2, 3, 0]
    assert durations.load(tmp_path / "missing.json", "smoke") == {}
    assert cli(["durations", str(tmp_path / "missing.json"), "--into", str(into)]) == 2


def test_the_claims_collect_longest_first():
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    seconds = json.loads((root / "claims" / "durations.json").read_text())["smoke"]
    out = subprocess.run([sys.executable, "-m", "pytest", "claims", "-m", "fashion_mnist", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True)
    ids = [line for line in out.stdout.splitlines() if line.startswith("claims/")]
    assert ids, out.stdout + out.stderr
    known = [seconds[i] for i in ids if i in seconds]  # the file also holds other datasets' instances
    assert known and ids[0] == max((i for i in ids if i in seconds), key=seconds.get)
    assert known == sorted(known, reverse=True)
