"""Determinism: two runs with the same seeds on the CPU give identical statistics in report.json.

Each run starts from its own empty store, so everything is recomputed: training (LeNet on
Fashion-MNIST at the smoke budget), DeepFool, the SVD subspaces and the bootstrap intervals of
two curvature claims (CV-8, CV-9), about 20 s each.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from advclaims import data, report

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = "top_singular or confined_deepfool_needs"  # CV-8 and CV-9: LeNet, DeepFool, SVD, bootstrap


def _run(tmp: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "claims/test_curvature.py", "-m", "fashion_mnist", "-k", CLAIMS,
           "-p", "no:xdist", "-q", "--repro-budget", "smoke", "--repro-seeds", "1", "--repro-threads", "1", "--repro-quiet",
           "--repro-cache", str(tmp / "store"), "--repro-report", str(tmp / "report")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads((tmp / "report" / "report.json").read_text())


def test_two_cold_runs_with_the_same_seeds_report_identical_statistics(tmp_path):
    try:
        data.read_arrays("fashion_mnist", "test", data.default_root(), limit=1)
    except data.DatasetMissing as err:
        pytest.skip(str(err))
    first, second = _run(tmp_path / "first"), _run(tmp_path / "second")
    a, b = report.measured(first), report.measured(second)
    assert sorted(a) == ["CV-8/fashion_mnist", "CV-9/fashion_mnist"]
    assert a == b, "the same seeds on the CPU gave different statistics"
    assert first["determinism"]["repeatable"] and first["determinism"]["threads"] == 1
    assert first["created"] and first["claims"][0]["wall_seconds"] > 0  # what `measured` leaves out exists
