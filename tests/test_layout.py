"""The house's plan, held against the code (every test here reads the whole project: ``-m project``): folders by layer, imports one way and without cycles, a verdict layer
that a notebook imports without pytest or torch, no private pytest attributes, one store-key builder, and the
plugin installed by its pytest11 entry point."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.project

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib" / "advclaims"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT / "lib").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The advclaims modules a file imports (``from a import b`` counts as a.b when a.b is a module); imports for
    type annotations only (``if TYPE_CHECKING:``) are not dependencies."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in LIB.rglob("*.py")}
    # "advclaims" itself (its face: the version) is below every layer
    return {name: {m for m in _imports(path) if m in modules and m not in (name, "advclaims")}
            for name, path in modules.items()}


def test_the_top_of_the_package_holds_at_most_eight_modules():
    top = sorted(p.name for p in LIB.glob("*.py"))
    assert len(top) <= 8, top
    folders = {p.name for p in LIB.iterdir() if (p / "__init__.py").exists()}
    assert {"plugin", "verdict", "checkpoints", "data", "attacks", "models", "analysis"} <= folders


def test_imports_have_no_cycles():
    graph = _graph()
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt != node.rpartition(".")[0]:  # a module importing its own package's face is no cycle
                visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, cycles[:3]


LAYERS = {  # a folder may import only these (and itself); the face modules at the top are listed by name
    "advclaims.verdict": {"advclaims.verdict", "advclaims.budgets", "advclaims.data", "advclaims.data.registry",
                          "advclaims.timing"},
    "advclaims.data": {"advclaims.data"},
    "advclaims.models": {"advclaims.models", "advclaims.budgets"},
    "advclaims.attacks": {"advclaims.attacks", "advclaims.accel"},
    "advclaims.analysis": {"advclaims.analysis", "advclaims.verdict", "advclaims.stats", "advclaims.checkpoints.artifacts",
                           "advclaims.attacks", "advclaims.models", "advclaims.data", "advclaims.evaluation",
                           "advclaims.accel", "advclaims.budgets", "advclaims.timing"},
}


def test_imports_run_one_way_between_layers():
    for name, deps in _graph().items():
        for layer, allowed in LAYERS.items():
            if name == layer or name.startswith(layer + "."):
                bad = {d for d in deps if not any(d == a or d.startswith(a + ".") for a in allowed)}
                assert not bad, f"{name} imports {sorted(bad)}: {layer} may import only {sorted(allowed)}"
        if not name.startswith(("advclaims.plugin", "advclaims.cli")):
            assert not {d for d in deps if d.startswith("advclaims.plugin")}, f"{name} imports the pytest plugin"


def test_the_verdict_layer_loads_no_pytest_and_no_torch():
    code = ("import sys, advclaims.verdict, advclaims.verdict.records, advclaims.verdict.report, "
            "advclaims.verdict.catalogue, advclaims.verdict.pooling, advclaims.stats; "
            "print(sorted(m for m in ('pytest', 'torch', 'torch.distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_private_pytest_attribute_is_used():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in LIB.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"\._fixtureinfo|\._pyfuncitem|\._request\b|_pytest\.", line)]
    assert not hits, hits


def test_store_keys_are_built_in_one_place():
    builder = {LIB / "checkpoints" / f for f in ("keys.py", "store.py", "pipeline.py", "distributed.py")}
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in [*LIB.rglob("*.py"), *(ROOT / "fixtures").glob("*.py")]
            if p not in builder for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(r"(?<![\w.])key_of\(|keys\.key_of\(|store\.fetch\(|_VERSION\s*=", line)]
    assert not hits, f"store keys built by hand (use Pipeline.cached and checkpoints/keys.py): {hits}"


def test_the_plugin_is_installed_by_its_pytest11_entry_point():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"advclaims.plugin": "advclaims.plugin"}
    assert "advclaims.plugin" not in (ROOT / "conftest.py").read_text()


def test_every_claim_s_analysis_declares_what_it_measures_and_expected_checks_only_that():
    import importlib
    import pkgutil

    import advclaims.analysis
    from advclaims.verdict import expected
    from advclaims.verdict.measurement import declarations, unknown_names

    found = {}
    for info in pkgutil.walk_packages(advclaims.analysis.__path__, "advclaims.analysis."):
        module = importlib.import_module(info.name)
        marked = [obj for obj in vars(module).values() if isinstance(getattr(obj, "measures", None), tuple)]
        for cid in {d.claim for obj in marked for d in obj.measures}:
            found.setdefault(cid, set()).update(declarations(vars(module), cid))
    specs = expected.load(ROOT / "expected")
    assert sorted(set(specs) - set(found), key=expected.claim_order) == []
    problems = [line for cid, spec in specs.items() for d in found[cid] for line in unknown_names(spec, d)]
    assert not problems, problems[:3]
    for cid, decls in found.items():  # grep finds test, analysis and expected entry by the claim id
        for d in decls:
            module, _, name = d.function.rpartition(".")
            assert cid in (getattr(importlib.import_module(module), name).__doc__ or ""), \
                f"{d.function}'s docstring does not name {cid}"
    for path in (ROOT / "claims").glob("test_*.py"):  # each claim test's module imports the analysis it declares
        text = path.read_text()
        for cid in set(re.findall(r'claim\("([A-Z]{2}-\d+)"\)', text)):
            assert any(d.function.rpartition(".")[2] in text for d in found.get(cid, ())), (path.name, cid)
