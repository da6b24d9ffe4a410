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

from advclaims import data

from advclaims.verdict import report

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = "top_singular or confined_deepfool_needs"  # CV-8 and CV-9: LeNet, DeepFool, SVD, bootstrap


def _run(tmp: Path) -> dict:
    cmd = [sys.executable, "-m", "pytest", "claims/test_curvature.py", "-m", "fashion_mnist", "-k", CLAIMS,
           "-p", "no:xdist", "-q", "--repro-budget", "smoke", "--repro-seeds", "1", "--repro-threads", "1", "--repro-quiet",
           "--repro-cache", str(tmp / "store"), "--repro-report", str(tmp / "report")]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads((tmp / "report" / "report.json").read_text())


@pytest.mark.slow
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


def test_cpu_training_gives_the_same_weights_whatever_thread_count_the_caller_set():
    """A spec in the store must mean one set of weights: a test, an xdist worker (1 thread) and a single-process run
    (all cores) that train it get the same model. Without the pin the caller's thread count changes the float
    reduction order of the backward pass, and SGD turns that into another model."""
    import torch

    from advclaims import models

    from advclaims.checkpoints import training

    g = torch.Generator().manual_seed(0)
    split = data.Split("train", (torch.rand(256, 1, 28, 28, generator=g) * 255).to(torch.uint8),
                       torch.randint(0, 10, (256,), generator=g))
    recipe = training.Recipe(method="standard", epochs=2, batch_size=64, lr=0.05, schedule="triangle",
                             momentum=0.9, weight_decay=5e-4, eps=0.0, alpha=0.0, attack_steps=0, augment=False)
    before = torch.get_num_threads()
    weights = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            net = models.build("lenet", num_classes=10, in_channels=1, input_size=28, width=8)
            metrics = training.train(net, split, recipe, seed=0, progress=False)
            assert torch.get_num_threads() == threads and metrics["cpu_threads"] == training.TRAIN_CPU_THREADS
            weights.append(torch.cat([p.detach().flatten() for p in net.state_dict().values()]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])
