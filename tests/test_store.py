"""Checkpoint store: keys, provenance, integrity, and one training for many processes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advclaims.checkpoints.store import Store, key_of


def _make(counter: list):
    def make():
        counter.append(1)
        return {"w": torch.arange(6.0).view(2, 3)}, {"accuracy": 0.5}
    return make


def test_key_is_canonical_over_dict_order():
    assert key_of({"a": 1, "b": {"c": 2, "d": 3}}) == key_of({"b": {"d": 3, "c": 2}, "a": 1})
    assert key_of({"a": 1}) != key_of({"a": 2})


def test_second_fetch_loads_instead_of_making(tmp_path):
    store, calls = Store(tmp_path), []
    first = store.fetch("models", {"x": 1}, _make(calls))
    second = store.fetch("models", {"x": 1}, _make(calls))
    assert len(calls) == 1 and first.made and not second.made
    assert torch.equal(second.payload["w"], first.payload["w"])


def test_provenance_records_spec_metrics_machine_and_checksum(tmp_path):
    entry = Store(tmp_path).fetch("models", {"x": 2}, _make([]))
    record = json.loads(entry.path.with_suffix(".json").read_text())
    assert record["spec"] == {"x": 2} and record["metrics"] == {"accuracy": 0.5}
    assert len(record["sha256"]) == 64 and "torch" in record["machine"] and record["wall_seconds"] >= 0


def test_no_temporary_files_are_left_behind(tmp_path):
    Store(tmp_path).fetch("models", {"x": 3}, _make([]))
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_truncated_checkpoint_is_moved_aside_and_rebuilt(tmp_path):
    store, calls = Store(tmp_path), []
    entry = store.fetch("models", {"x": 4}, _make(calls))
    entry.path.write_bytes(entry.path.read_bytes()[:20])
    with pytest.warns(UserWarning, match="moved aside") as caught:
        again = store.fetch("models", {"x": 4}, _make(calls))
    assert all("\n" not in str(w.message) for w in caught), "the problem must be reported in one line"
    assert again.made and len(calls) == 2
    assert list(entry.path.parent.glob("*.corrupt-*.pt"))


def test_a_checkpoint_whose_provenance_names_another_spec_is_refused(tmp_path):
    store, calls = Store(tmp_path), []
    entry = store.fetch("models", {"x": 5}, _make(calls))
    meta = entry.path.with_suffix(".json")
    record = json.loads(meta.read_text())
    record["spec"] = {"x": 6}
    meta.write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="different spec"):
        assert store.fetch("models", {"x": 5}, _make(calls)).made


def test_a_pickle_with_code_is_never_executed(tmp_path):
    store = Store(tmp_path)
    entry = store.fetch("models", {"x": 7}, _make([]))

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"w": Evil()}, entry.path)
    record = json.loads(entry.path.with_suffix(".json").read_text())
    from advclaims.checkpoints.keys import file_sha256 as _sha256
    record["sha256"] = _sha256(entry.path)  # a forged but consistent checksum
    entry.path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="does not load") as caught:
        store.fetch("models", {"x": 7}, _make([]))
    assert all("\n" not in str(w.message) for w in caught), "the problem must be reported in one line"
    assert not (tmp_path / "pwned").exists()


CONCURRENT = textwrap.dedent("""
    import os, time, torch, pytest
    from advclaims.checkpoints.store import Store

    KEYS = ["a", "b", "c"]

    @pytest.mark.parametrize("n", range(8))
    def test_fetch_all(n):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        root, log = os.environ["STORE_ROOT"], os.environ["STORE_LOG"]
        for key in KEYS[n % 3:] + KEYS[:n % 3]:  # every worker starts with a different checkpoint
            def make():
                with open(log, "a") as f:
                    f.write(f"trained {key} {worker}\\n")
                time.sleep(0.5)  # long enough for the other workers to queue on the lock
                return {"w": torch.full((3,), float(ord(key)))}, {}
            entry = Store(root).fetch("models", {"net": key}, make)
            assert torch.equal(entry.payload["w"], torch.full((3,), float(ord(key))))
            with open(log, "a") as f:
                f.write(f"{'made' if entry.made else 'loaded'} {key} {worker}\\n")
""")


@pytest.mark.slow
def test_eight_xdist_workers_asking_for_the_same_checkpoints_train_each_once(tmp_path):
    test_file = tmp_path / "test_concurrent_fetch.py"
    test_file.write_text(CONCURRENT)
    log = tmp_path / "log.txt"
    env = {**os.environ, "STORE_ROOT": str(tmp_path / "store"), "STORE_LOG": str(log), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-n", "8", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", str(test_file)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "8 passed" in run.stdout
    lines = [line.split() for line in log.read_text().splitlines()]
    trained = sorted(key for what, key, _ in lines if what == "trained")
    assert trained == ["a", "b", "c"], f"each checkpoint must be trained exactly once: {trained}"
    assert sum(what == "loaded" for what, _, _ in lines) == 8 * 3 - 3
    assert len({worker for _, _, worker in lines}) > 1, "the fetches did not run in several workers"
