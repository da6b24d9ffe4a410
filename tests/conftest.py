"""Shared pytest configuration for the library's unit tests: the hypothesis profile, and ``claim_project``, a
pytester folder with an expected/ of its own for driving the plugin end to end."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import settings

# `pytest --hypothesis-profile ci`: fewer examples for CI machines (tests scale their counts to it)
settings.register_profile("ci", max_examples=10, deadline=None)


def claim_toml(cid: str = "LP-7", statistic: str = "diff", *, comparator: str = ">", threshold: float = 0.0,
               expect: dict | None = None, title: str = "t") -> str:
    """expected/'s entry of one claim with one check (basis: protocol); ``expect``: {"dataset.budget": {"verdict":
    ..., "reason": ...}} records."""
    text = textwrap.dedent(f'''
        [claims.{cid}]
        title = "{title}"
        source = "s"
        [[claims.{cid}.checks]]
        statistic = "{statistic}"
        description = "d"
        comparator = "{comparator}"
        threshold = {threshold!r}
        basis = "protocol"
        basis_note = "a test"
    ''')
    for key, record in (expect or {}).items():
        text += f'[claims.{cid}.expect."{key}"]\n' + "".join(f'{k} = "{v}"\n' for k, v in record.items())
    return text


@pytest.fixture(name="claim_toml")
def claim_toml_fixture():
    """``claim_toml`` (above) for a test to build its claims with."""
    return claim_toml


@pytest.fixture
def claim_project(pytester):
    """``claim_project(*claims_toml, **test_modules)``: a pytester folder that is its own rootdir, with
    expected/local_properties.toml holding the claims (default: LP-7 checking ``diff > 0``), --strict-markers
    (``strict=False``: without), and the test modules given (name -> source)."""
    def make(*claims: str, strict: bool = True, **modules: str):
        (pytester.path / "expected").mkdir(exist_ok=True)
        (pytester.path / "expected" / "local_properties.toml").write_text("".join(claims) or claim_toml())
        pytester.makeini("[pytest]\n" + ("addopts = --strict-markers\n" if strict else ""))
        for name, source in modules.items():
            pytester.makepyfile(**{name: textwrap.dedent(source)})
        return pytester
    return make


@pytest.fixture(scope="session", name="suite_models_into")
def suite_models_into_fixture():
    return suite_models_into


def suite_models_into(store, wanted) -> None:
    """Copy the suite's own Fashion-MNIST smoke models ``wanted`` ((role, seed) pairs) into a test's own ``store``.
    Each is taken from the shared store, trained there first if it is not yet (under the store's per-key lock, so a
    model the claims or another test module is training in parallel is waited for, never trained twice): these are
    exactly the checkpoints `pytest claims -m fashion_mnist` trains, so the shared store holds nothing a claims run
    would not put there. The test then imports, measures and attacks only in its own store."""
    import shutil

    from advclaims.checkpoints.keys import key_of
    from advclaims.checkpoints.pipeline import Pipeline
    from advclaims.checkpoints.store import Store

    shared = Pipeline(budget="smoke", store=Store(), progress=False)
    (store.root / "models").mkdir(parents=True, exist_ok=True)
    for role, seed in wanted:
        shared.model(role, "fashion_mnist", seed=seed)
        key = key_of(shared.model_spec(role, "fashion_mnist", seed=seed))
        for suffix in (".pt", ".json"):
            shutil.copy2(shared.store.root / "models" / f"{key}{suffix}", store.root / "models" / f"{key}{suffix}")
