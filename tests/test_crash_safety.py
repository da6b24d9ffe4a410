"""Crash safety: real processes killed with SIGKILL while training or writing a checkpoint.

After every kill the store must be consistent: the next run loads no partial file, does not hang
on the dead process's lock, leaves no temporary files, retrains at most the epoch in progress,
and ends with exactly the weights of a run that was never interrupted (CPU, same thread count).
"""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advclaims.checkpoints.store import Store

WORKER = Path(__file__).with_name("crash_worker.py")
TIMEOUT = 120  # seconds: a run that waits longer is deadlocked on a stale lock


def _run(root: Path, log: Path, fault: str = "") -> int:
    return subprocess.run([sys.executable, str(WORKER), str(root), str(log), fault], timeout=TIMEOUT).returncode


def _weights(root: Path) -> dict:
    [pt] = [p for p in (root / "models").glob("*.pt") if ".corrupt-" not in p.name and ".resume" not in p.name]
    return torch.load(pt, weights_only=True)


def _assert_clean(root: Path):
    leftovers = [p.name for p in (root / "models").iterdir() if p.suffix == ".tmp" or ".resume" in p.name]
    assert leftovers == [], f"left behind: {leftovers}"


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The weights of one uninterrupted run, and its log."""
    root = tmp_path_factory.mktemp("reference")
    log = root / "log.txt"
    assert _run(root / "store", log) == 0
    return _weights(root / "store"), log.read_text().split()


@pytest.mark.parametrize("fault, resumes_at", [
    ("step:7", 1),          # mid-epoch 2 (4 steps per epoch): epoch 1 is kept, epoch 2 is redone
    ("step:13", 3),         # mid-epoch 4
    ("resume-write", 0),    # the first resume state half-written: nothing was kept, start over
    ("model-write", 4),     # training finished, checkpoint half-written: no epoch is redone
    ("provenance", 4),      # checkpoint renamed into place, provenance never written
])
def test_a_killed_run_resumes_and_ends_with_the_uninterrupted_weights(tmp_path, reference, fault, resumes_at):
    root, log = tmp_path / "store", tmp_path / "log.txt"
    assert _run(root, log, fault) == -signal.SIGKILL
    killed_at = log.read_text() if log.exists() else ""
    assert "done" not in killed_at
    if fault == "provenance":
        assert list((root / "models").glob("*.pt"))  # the orphan the next run must not trust
    log.unlink(missing_ok=True)
    assert _run(root, log) == 0
    lines = log.read_text().splitlines()
    assert f"start {resumes_at}" in lines, lines
    assert lines.count("done") == 1
    assert _same(_weights(root), reference[0])
    _assert_clean(root)


def test_kills_at_random_moments_lose_nothing_that_was_finished(tmp_path, reference):
    """Three SIGKILLs at random times during a run (training, writes, anything), then a full run."""
    root, log = tmp_path / "store", tmp_path / "log.txt"
    rng = random.Random(20261121)
    start = time.perf_counter()
    assert _run(tmp_path / "timing", tmp_path / "timing.log") == 0
    duration = time.perf_counter() - start
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(root), str(log)])
        time.sleep(rng.uniform(0.2, 1.0) * duration)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    assert _run(root, log) == 0
    assert _same(_weights(root), reference[0])
    _assert_clean(root)
    entry = Store(root).fetch("models", _spec_of(root), lambda: pytest.fail("a stored checkpoint was rebuilt"))
    assert not entry.made


def _spec_of(root: Path) -> dict:
    import json
    [meta] = (root / "models").glob("*.json")
    return json.loads(meta.read_text())["spec"]
