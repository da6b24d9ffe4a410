"""Registers the advclaims plugin (options, claim marker, check, report) and the fixture plugins."""

import os
from pathlib import Path

# before torch loads OpenMP: idle threads sleep instead of spinning, so processes sharing the cores
# (xdist workers, a second job) do not slow each other down by orders of magnitude
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

HERE = Path(__file__).parent
TESTS = HERE / "tests"

# every module of fixtures/ is a fixture plugin (data, models, adversarial, and one per paper as needed)
pytest_plugins = ["advclaims.plugin"] + [
    f"fixtures.{p.stem}" for p in sorted((HERE / "fixtures").glob("*.py")) if p.stem != "__init__"]


def pytest_collection_modifyitems(config, items):
    # the library's own tests carry `unit`, so one run can select "unit or fashion_mnist"
    for item in items:
        if TESTS in Path(item.fspath).parents:
            item.add_marker(pytest.mark.unit)
