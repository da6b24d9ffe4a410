"""Checkpoint store: keys, provenance, integrity, and one training for many processes."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advclaims.store import Store, key_of


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
    with pytest.warns(UserWarning, match="moved aside"):
        again = store.fetch("models", {"x": 4}, _make(calls))
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
    from advclaims.store import _sha256
    record["sha256"] = _sha256(entry.path)  # a forged but consistent checksum
    entry.path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="does not load"):
        store.fetch("models", {"x": 7}, _make([]))
    assert not (tmp_path / "pwned").exists()


WORKER = textwrap.dedent("""
    import sys, time, torch
    from advclaims.store import Store
    root, log = sys.argv[1], sys.argv[2]
    def make():
        with open(log, "a") as f:
            f.write("trained\\n")
        time.sleep(1.0)  # long enough that every process arrives while the first trains
        return {"w": torch.ones(3)}, {}
    entry = Store(root).fetch("models", {"net": "same"}, make)
    assert torch.equal(entry.payload["w"], torch.ones(3))
""")


def test_many_processes_asking_for_one_checkpoint_train_it_once(tmp_path):
    log = tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "store"), str(log)])
             for _ in range(4)]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0, 0, 0]
    assert log.read_text().count("trained") == 1
