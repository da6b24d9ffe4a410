"""docs/adding-a-claim.md cannot rot: its worked example (a new paper with one claim) is built from the page's own
code blocks in a copy of the project and run as a user would: the claim gets its verdict and report entry, its
can-fail test passes, and the project-wide tests of the copy (``-m project``) stay green."""

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


def test_the_page_has_the_four_pieces_of_a_new_paper():
    paths = [p for p, _ in blocks()]
    assert paths == ["expected/input_gradients.toml", "lib/advclaims/analysis/input_gradients/__init__.py",
                     "claims/test_input_gradients.py", "tests/test_can_fail_input_gradients.py"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project (what git tracks) with the page's example added: appended to existing files, new
    files written; then the catalogue regenerated, as the page says."""
    root = tmp_path_factory.mktemp("project")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root)
    for path, code in blocks():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.write_text(target.read_text().rstrip("\n") + "\n\n\n" + code)
        else:
            target.write_text(code)
    catalogue = _run(root, "-m", "advclaims.cli", "claims", "--markdown")
    assert catalogue.returncode == 0, catalogue.stderr
    (root / "docs" / "claims.md").write_text(catalogue.stdout)
    return root


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{project / 'lib'}{os.pathsep}{project}"}
    return subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=1200)


@pytest.mark.slow
def test_a_new_paper_added_by_the_page_gets_its_verdict_and_keeps_the_project_tests_green(project, pipeline, tmp_path):
    store = pipeline.store.root  # the session's store: the smoke models the claims train are reused
    claim = _run(project, "-m", "pytest", "claims/test_input_gradients.py", "-m", "fashion_mnist", "-p", "no:xdist",
                 "--repro-budget=smoke", "--repro-seeds=1", "--repro-quiet", f"--repro-cache={store}",
                 f"--repro-report={tmp_path / 'r'}")
    assert claim.returncode == 0, claim.stdout[-3000:] + claim.stderr[-2000:]
    [record] = json.loads((tmp_path / "r" / "report.json").read_text())["claims"]
    assert record["claim"] == "IG-1" and record["paper"] == "input_gradients"
    assert record["verdict"] == "reproduced" and record["outcome"] == "passed" and record["figures"]
    assert "## IG-1 on fashion_mnist: Adversarial training gives smaller input gradients" in (
        tmp_path / "r" / "report.md").read_text()
    fails = _run(project, "-m", "pytest", "tests/test_can_fail_input_gradients.py", "-p", "no:xdist", "-q")
    assert fails.returncode == 0 and "1 passed" in fails.stdout, fails.stdout[-3000:] + fails.stderr[-2000:]
    catalogue = _run(project, "-m", "advclaims.cli", "claims", "IG-1")
    assert catalogue.returncode == 0 and "IG-1: Adversarial training gives smaller input gradients" in catalogue.stdout
    suite = _run(project, "-m", "pytest", "tests", "-m", "project", "-p", "no:xdist", "-q",
                 f"--repro-cache={tmp_path / 'store'}")
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
