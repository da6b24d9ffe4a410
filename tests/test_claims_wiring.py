"""The real claims/ suite, run as a user runs it: markers select instances, absent data skips."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.project  # reads the whole project: a new claim or paper must keep it green

ROOT = Path(__file__).resolve().parents[1]


def run_pytest(*args, tmp_path):
    env = {**os.environ, "ADVCLAIMS_CACHE": str(tmp_path / "store")}
    return subprocess.run([sys.executable, "-m", "pytest", "claims", "-p", "no:randomly", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_cifar10_without_its_files_skips_saying_how_to_provide_it(tmp_path):
    out = run_pytest("-m", "cifar10", "--repro-data-root", str(tmp_path / "empty"), "-rs", tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed" not in out.stdout.splitlines()[-1] and "skipped" in out.stdout.splitlines()[-1]
    assert "cifar-10-batches-py" in out.stdout and "--repro-download" in out.stdout
    assert not (tmp_path / "store" / "models").exists()  # nothing trained for a dataset that is absent


def test_dataset_markers_select_exactly_their_instances(tmp_path):
    out = run_pytest("-m", "cifar10", "--collect-only", "-q", tmp_path=tmp_path)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert ids and all("cifar10" in _params(line) for line in ids)
    everything = run_pytest("--collect-only", "-q", tmp_path=tmp_path)
    all_ids = [line for line in everything.stdout.splitlines() if "::" in line]
    assert len([i for i in all_ids if "cifar10" in _params(i)]) == len(ids) < len(all_ids)


def _params(node_id: str) -> list[str]:
    """The parameter ids of a node id, e.g. [cifar10-vgg16] -> ["cifar10", "vgg16"]."""
    return node_id.rsplit("[", 1)[-1].rstrip("]").split("-") if node_id.endswith("]") else []


def test_every_claim_in_expected_has_a_test_and_collects_at_the_paper_budget(tmp_path):
    from advclaims.verdict import expected

    out = run_pytest("-m", "cifar10", "--repro-budget", "paper", "--collect-only", "-q", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    source = "\n".join(p.read_text() for p in (ROOT / "claims").glob("test_*.py"))
    for cid in expected.load():
        assert f'claim("{cid}")' in source, f"{cid} is in expected/ but no test checks it"
