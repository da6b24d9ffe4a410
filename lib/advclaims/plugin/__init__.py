"""The pytest plugin (pyproject's pytest11 entry point ``advclaims.plugin``). Its parts, each a plugin of its own:

- ``options``: the --repro-* options and the repro_expected ini key, validated once into ``Settings``
- ``session``: ``ReproSession``, the session object: settings, catalogue, pipeline, records, the report at the end
- ``collection``: markers, claim ids, ``-k`` by id, training seeds as a parameter
- ``fixtures``: ``repro_session``, ``pipeline``, ``repro_budget``, ``repro_seed``, ``check``
- ``hooks``: per instance: start time, unmeasurable data and errors as records, the must-check rule
- ``preflight``: --repro-preflight's table
- ``reporting`` (figures, error lines, the terminal table) and ``needs`` (``advclaims models``) are used by them.

A claim module imports ``on_datasets`` from here; ``evaluate`` (a Measurement's record outside a session) is
``advclaims.verdict.records.evaluate``.
"""

from __future__ import annotations

import os

# before torch loads OpenMP (the parts below import it): idle threads sleep instead of spinning, so processes
# sharing the cores (xdist workers, a second job) do not slow each other down by orders of magnitude
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from advclaims import data as data_mod  # noqa: E402
from advclaims.verdict.records import evaluate  # noqa: E402,F401  (tests and notebooks import it from the plugin)

# the parts, dependencies first (each is imported by pytest before anything imports it)
pytest_plugins = ["advclaims.plugin.options", "advclaims.plugin.session", "advclaims.plugin.collection",
                  "advclaims.plugin.fixtures", "advclaims.plugin.hooks", "advclaims.plugin.preflight"]


def on_datasets(*names: str):
    """Parametrise a claim over datasets, one marker per dataset (``-m cifar10`` selects its instances)."""
    for n in names:
        data_mod.info(n)
    return pytest.mark.parametrize(
        "dataset", [pytest.param(n, marks=getattr(pytest.mark, n), id=n) for n in names], indirect=True)
