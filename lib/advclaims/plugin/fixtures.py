"""The fixtures every claim shares: the session's pipeline (budget, seeds, store, data, device, external models),
the training seed a fixture builds for, and ``check``, which a claim test hands its Measurement to."""

from __future__ import annotations

import pytest

from advclaims import budgets as budgets_mod
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.plugin.session import ReproSession
from advclaims.plugin.stash import session_of
from advclaims.verdict.measurement import Measurement


@pytest.fixture(scope="session")
def repro_session(request) -> ReproSession:
    """The session object: settings, catalogue, pipeline and records (advclaims.plugin.session)."""
    return session_of(request.config)


@pytest.fixture(scope="session")
def pipeline(repro_session) -> Pipeline:
    return repro_session.pipeline


@pytest.fixture(scope="session")
def repro_budget(repro_session) -> budgets_mod.Budget:
    return repro_session.budget


@pytest.fixture
def repro_seed(repro_session) -> int:
    """The training seed a fixture builds for: the budget's first. With several seeds a claim test is
    parametrised over them (advclaims.plugin.collection), and the parameter takes this fixture's place."""
    return repro_session.seeds[0]


@pytest.fixture
def check(request, repro_session):
    """Hand a claim's Measurement over: it is held against expected/ now (one seed), or pooled with the other
    seeds' at the end of the session; the test then passes, xfails (a known finding) or fails."""
    repro_session.instance(request.node)  # a misused check is a usage error before any work

    def _check(measurement: Measurement) -> None:
        if not isinstance(measurement, Measurement):
            raise TypeError(f"check takes the Measurement an analysis returns, got {type(measurement).__name__}")
        repro_session.hand_over(request.node, measurement)

    return _check
