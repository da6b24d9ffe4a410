"""The fixtures every claim shares: the session's pipeline (budget, seeds, store, data, device, external models),
the training seed a fixture builds for, and ``check``, which a claim test hands its Measurement to."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from . import budgets as budgets_mod
from .measurement import Measurement
from .options import accel_of, device_of, external_models, seeds_of, stage_maps
from .pipeline import Pipeline
from .store import Store
from .verdicts import CHECKED, MEASUREMENTS, PIPELINES, instance_of


@pytest.fixture(scope="session")
def repro_budget(pipeline) -> budgets_mod.Budget:
    return pipeline.budget


@pytest.fixture(scope="session")
def pipeline(request) -> Pipeline:
    cfg = request.config
    preflight = cfg.getoption("--repro-preflight")
    store = Store(cfg.getoption("--repro-cache"))
    pipe = Pipeline(
        budget=cfg.getoption("--repro-budget"),
        store=Store(store.root / "preflight") if preflight else store,
        enforce_health=not preflight,
        preflight=preflight,
        external_models=external_models(cfg.getoption("--repro-model"), cfg.invocation_params.dir),
        stage_maps=stage_maps(cfg.getoption("--repro-stages")),
        data_root=cfg.getoption("--repro-data-root"),
        device=device_of(cfg),
        download=cfg.getoption("--repro-download"),
        progress=not cfg.getoption("--repro-quiet") and sys.stderr.isatty(),
        accel=accel_of(cfg, device_of(cfg)),
    )
    pipe.budget = dataclasses.replace(pipe.budget, seeds=seeds_of(cfg))
    PIPELINES.append(pipe)
    return pipe


@pytest.fixture
def check(request, pipeline):
    """Hand a claim's Measurement over: one per training seed is collected (``pytest_pyfunc_call`` runs the
    test once per seed), then pooled into the verdict, recorded, and the test passes / xfails / fails."""
    instance_of(request.node)  # a misused check is a usage error before any work

    def _check(measurement: Measurement) -> None:
        if not isinstance(measurement, Measurement):
            raise TypeError(f"check takes the Measurement an analysis returns, got {type(measurement).__name__}")
        request.node.stash[CHECKED] = True
        request.node.stash.setdefault(MEASUREMENTS, []).append(measurement)

    return _check


@pytest.fixture
def repro_seed(pipeline) -> int:
    """The training seed a fixture builds for: the budget's first; ``run_per_seed`` supplies the others."""
    return pipeline.budget.seeds[0]
