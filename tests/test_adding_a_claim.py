"""docs/adding-a-claim.md cannot rot: its worked example is built from the page's own code blocks in a copy of
the project, run as a user would, and must give a verdict, a report entry, a catalogue entry and a can-fail test
that passes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "adding-a-claim.md"
BLOCK = re.compile(r"<!-- example: (\S+) -->\s*```\w*\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(PAGE.read_text())


def test_the_page_has_the_four_pieces():
    paths = [p for p, _ in blocks()]
    assert paths == ["expected/local_properties.toml", "lib/advclaims/analysis/local_properties/robustness.py",
                     "claims/test_local_properties.py", "tests/test_can_fail_local_properties.py"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project with the page's example added: appended to existing files, new files written."""
    root = tmp_path_factory.mktemp("project")
    for name in ("lib", "claims", "fixtures", "expected", "tests"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("conftest.py", "pytest.ini"):
        shutil.copy(ROOT / name, root / name)
    for path, code in blocks():
        target = root / path
        if target.exists():
            target.write_text(target.read_text().rstrip("\n") + "\n\n\n" + code)
        else:
            target.write_text(code)
    return root


def _run(project: Path, *args: str, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{project / 'lib'}{os.pathsep}{project}"}
    return subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=1200)


def test_the_worked_example_runs_end_to_end(project, pipeline, tmp_path):
    store = pipeline.store.root  # the session's store: the smoke models the claims train are reused
    claim = _run(project, "-m", "pytest", "claims/test_local_properties.py", "-k", "adversarial_training_buys",
                 "-m", "fashion_mnist", "-p", "no:xdist", "-p", "no:cacheprovider", "--repro-budget=smoke",
                 "--repro-seeds=1", "--repro-quiet", f"--repro-cache={store}", f"--repro-report={tmp_path / 'r'}",
                 store=store)
    assert claim.returncode == 0, claim.stdout[-3000:] + claim.stderr[-2000:]
    [record] = json.loads((tmp_path / "r" / "report.json").read_text())["claims"]
    assert record["claim"] == "LP-14" and record["verdict"] == "reproduced" and record["outcome"] == "passed"
    assert record["checks"][0]["basis"] == "paper" and record["figures"]
    assert "## LP-14 on fashion_mnist: Adversarial training buys robust accuracy" in (tmp_path / "r" / "report.md"
                                                                                       ).read_text()
    fails = _run(project, "-m", "pytest", "tests/test_can_fail_local_properties.py", "-k", "lp14", "-p",
                 "no:xdist", "-p", "no:cacheprovider", "-q", f"--repro-cache={store}", store=store)
    assert fails.returncode == 0 and "1 passed" in fails.stdout, fails.stdout[-3000:] + fails.stderr[-2000:]
    catalogue = _run(project, "-m", "advclaims.cli", "claims", "LP-14", "--expected", str(project / "expected"),
                     store=store)
    assert catalogue.returncode == 0 and "LP-14: Adversarial training buys robust accuracy" in catalogue.stdout
