"""The claims catalogue is the project's own: generated from expected/, up to date in docs/claims.md, complete,
and nothing in the project points outside it. Imports run one way (claims, fixtures -> analysis -> the rest)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from advclaims import catalogue, expected

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "advclaims"


def test_docs_claims_md_is_the_catalogue_generated_from_expected():
    assert (ROOT / "docs" / "claims.md").read_text() == catalogue.markdown(), (
        "docs/claims.md is out of date: run `advclaims claims --markdown > docs/claims.md`")


def test_advclaims_claims_lists_all_33_claims_and_every_test_has_one():
    out = subprocess.run([sys.executable, "-m", "advclaims.cli", "claims"], capture_output=True, text=True, cwd=ROOT)
    listed = [line.split()[0] for line in out.stdout.splitlines()]
    assert out.returncode == 0 and len(listed) == 33 == len(set(listed))
    tested = set(re.findall(r'@pytest\.mark\.claim\("([A-Z]{2}-\d+)"\)',
                            "".join(p.read_text() for p in (ROOT / "claims").glob("test_*.py"))))
    assert tested == set(listed) == set(expected.load())


def test_every_claim_has_its_statement_and_every_paper_its_citation():
    specs = expected.load()
    assert all(s.statement for s in specs.values())
    papers = expected.papers()
    assert set(papers) == set(expected.PAPERS)
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


def _imports(path: Path) -> set[str]:
    """The advclaims modules (and top-level fixtures/claims packages) a file imports, resolved."""
    package = ".".join(path.relative_to(ROOT / "lib").with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_imports_run_one_way():
    plugin_parts = {"advclaims.plugin", "advclaims.options", "advclaims.verdicts", "advclaims.reporting",
                    "advclaims.session", "advclaims.preflight"}
    for path in (LIB / "analysis").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("fixtures", "claims") or m in plugin_parts}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: analysis must not depend on fixtures or the plugin"
    for sub in ("attacks", "models"):
        for path in (LIB / sub).rglob("*.py"):
            bad = {m for m in _imports(path) if m.startswith("advclaims.analysis")}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}: {sub} must not depend on the analyses"
    assert not {m for m in _imports(LIB / "stats.py") if m.startswith("advclaims.analysis")}


def test_analysis_has_one_package_per_paper_and_each_plugin_part_says_its_job():
    packages = {p.name for p in (LIB / "analysis").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(expected.PAPERS)
    assert not [p.name for p in (LIB / "analysis").glob("*.py") if any(k in p.stem for k in expected.PAPERS)]
    for part in ("plugin", "options", "verdicts", "reporting", "session", "preflight"):
        doc = ast.get_docstring(ast.parse((LIB / f"{part}.py").read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, part
