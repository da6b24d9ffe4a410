"""The claims catalogue is the project's own: generated from expected/, up to date in docs/claims.md, complete,
and nothing in the project points outside it. Imports run one way (claims, fixtures -> analysis -> the rest)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from advclaims.verdict import catalogue

from advclaims.verdict import expected

pytestmark = pytest.mark.project  # reads the whole project: a new claim or paper must keep it green

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "advclaims"


def test_docs_claims_md_is_the_catalogue_generated_from_expected():
    assert (ROOT / "docs" / "claims.md").read_text() == catalogue.markdown(), (
        "docs/claims.md is out of date: run `advclaims claims --markdown > docs/claims.md`")


def test_advclaims_claims_lists_every_claim_of_expected_once_and_every_claim_has_a_test():
    out = subprocess.run([sys.executable, "-m", "advclaims.cli", "claims"], capture_output=True, text=True, cwd=ROOT)
    listed = [line.split()[0] for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(listed) == len(set(listed)) >= 1
    tested = set(re.findall(r'@pytest\.mark\.claim\("([A-Z]{2}-\d+)"\)',
                            "".join(p.read_text() for p in (ROOT / "claims").glob("test_*.py"))))
    assert tested == set(listed) == set(expected.load())


def test_every_claim_has_its_statement_and_every_paper_its_citation():
    specs = expected.load()
    assert all(s.statement for s in specs.values())
    papers = expected.papers()
    assert set(expected.PAPERS) <= set(papers) == set(expected.paper_keys(specs))
    assert all(p.get("title") and p.get("authors") and p.get("venue") for p in papers.values())


def _project_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    return [ROOT / f for f in tracked if f.endswith((".py", ".md", ".toml", ".sh", ".yml", ".ini", ".txt", ".cfg"))
            and (ROOT / f).is_file()]


def test_nothing_in_the_project_refers_to_files_outside_it():
    outside = re.compile(r"\.\./shared|shared/(claims|design)\.md|shared/papers|papers/\d{3}_[0-9a-f]+\.txt|"
                         r"claims\.md of the project's shared folder")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in _project_files() if p.name != "test_catalogue.py"
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if outside.search(line)]
    assert not hits, hits


def test_each_analysis_package_is_a_papers_and_every_module_says_its_job():
    packages = {p.name for p in (LIB / "analysis").iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(expected.paper_keys(expected.load()))  # a new paper's package joins its expected/ file
    assert not [p.name for p in (LIB / "analysis").glob("*.py") if any(k in p.stem for k in packages)]
    for path in LIB.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()[0]) > 15, f"{path.relative_to(ROOT)} has no docstring saying its job"
