"""The pytest plugin's entry point: it registers its parts, each a plugin of its own, and gives claims ``on_datasets``.

- ``advclaims.options``: the --repro-* options, their validation (one line per mistake), markers, the header
- ``advclaims.verdicts``: a claim's Measurements (one per training seed) become a verdict against expected/ and
  the test's outcome; unmeasurable statistics an inconclusive verdict with their reason
- ``advclaims.reporting``: report.json, report.md and figures, saved runs and their comparison, the terminal table
- ``advclaims.session``: the fixtures every claim shares (``pipeline``, ``repro_seed``, ``repro_budget``, ``check``)
- ``advclaims.preflight``: --repro-preflight
"""

from __future__ import annotations

import pytest

from . import data as data_mod

# the parts, dependencies first (each is imported by pytest before anything imports it)
pytest_plugins = ["advclaims.options", "advclaims.verdicts", "advclaims.reporting", "advclaims.session",
                  "advclaims.preflight"]


def on_datasets(*names: str):
    """Parametrise a claim over datasets, one marker per dataset (``-m cifar10`` selects its instances)."""
    for n in names:
        data_mod.info(n)
    return pytest.mark.parametrize(
        "dataset", [pytest.param(n, marks=getattr(pytest.mark, n), id=n) for n in names], indirect=True)


def evaluate(*args, **kwargs):
    """advclaims.verdicts.evaluate (kept here: tests and notebooks import it from the plugin)."""
    from .verdicts import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
