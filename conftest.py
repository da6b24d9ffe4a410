"""The checkout's fixture plugins (advclaims itself is a pytest plugin: pyproject's pytest11 entry point loads it).

A new paper's fixtures go in fixtures/<paper>.py and are named here (docs/adding-a-claim.md).
"""

from pathlib import Path

import pytest

TESTS = Path(__file__).parent / "tests"

pytest_plugins = ["fixtures.data", "fixtures.models", "fixtures.adversarial", "fixtures.local_properties",
                  "fixtures.high_frequency", "fixtures.info_bottleneck", "fixtures.curvature"]


def pytest_collection_modifyitems(config, items):
    # the library's own tests carry `unit`, so one run can select "unit or fashion_mnist"
    for item in items:
        if TESTS in Path(item.fspath).parents:
            item.add_marker(pytest.mark.unit)
