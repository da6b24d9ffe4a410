"""Training seeds as a statistical unit: each claim instance runs once per seed and its statistics pool.

A fixture whose value depends on the training seed takes ``repro_seed`` (directly or through another
fixture): models train with that seed, and the method's own random draws (attack random starts, boundary
points, random bases, bottleneck noise, targets) follow it. ``run_per_seed`` calls a claim test once per
seed of the budget (``--repro-seeds``), re-resolving only the seed-dependent fixtures for the seeds after
the first; everything else (data, the pipeline, session memos) is shared. ``pool`` turns the per-seed
Measurements into one whose statistics are pooled by ``stats.pool`` for the crossed design (every seed measured
on the same images with the same bootstrap resamples): both scopes, "these models" and "this training recipe",
with the budget choosing which decides (budgets.Budget.deciding_scope).
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from . import stats
from .measurement import Measurement

SEED_FIXTURE = "repro_seed"


def _definitions(item) -> dict:
    return {name: defs[-1] for name, defs in item._fixtureinfo.name2fixturedefs.items() if defs}


def seed_dependent(item) -> set[str]:
    """The fixtures of ``item`` whose value depends on ``repro_seed``, directly or transitively."""
    defs = _definitions(item)
    memo: dict[str, bool] = {}

    def depends(name: str, trail: tuple = ()) -> bool:
        if name == SEED_FIXTURE:
            return True
        if name not in defs or name in trail:
            return False
        if name not in memo:
            memo[name] = any(depends(a, trail + (name,)) for a in defs[name].argnames)
        return memo[name]

    return {name for name in defs if depends(name)}


def arguments_for_seed(item, seed: int) -> dict:
    """The test function's arguments with every seed-dependent fixture computed afresh for ``seed``."""
    defs = _definitions(item)
    dependent = seed_dependent(item)
    params = getattr(getattr(item, "callspec", None), "params", {})
    cache: dict = {}

    def value(name: str):
        if name == SEED_FIXTURE:
            return seed
        if name not in dependent:
            return item.funcargs[name]
        if name not in cache:
            fd = defs[name]
            if fd.scope != "function" or inspect.isgeneratorfunction(fd.func):
                raise pytest.UsageError(f"fixture {name!r} depends on the training seed, so it must be a plain "
                                        f"function-scoped fixture (no yield, no wider scope)")
            request = SimpleNamespace(param=params.get(name), config=item.config, node=item, fixturename=name,
                                      getfixturevalue=value)
            cache[name] = fd.func(**{a: request if a == "request" else value(a) for a in fd.argnames})
        return cache[name]

    return {name: value(name) for name in item._fixtureinfo.argnames}


def pool(measurements: list[Measurement], seeds: tuple[int, ...]) -> Measurement:
    """One Measurement from one per seed: statistics pooled (stats.pool), values averaged over the seeds,
    tables and figures of the first seed, hypothesis tests of every seed. ``n`` stays the number of evaluation
    images: the seeds are measured on the same ones."""
    if len(measurements) == 1:
        return measurements[0]
    first = measurements[0]
    names = [k for k in first.statistics if all(k in m.statistics for m in measurements)]
    values = {k: sum(m.values[k] for m in measurements) / len(measurements) for k, v in first.values.items()
              if isinstance(v, (int, float)) and all(isinstance(m.values.get(k), (int, float)) for m in measurements)}
    tests = {f"{name} (seed {s})": t for s, m in zip(seeds, measurements) for name, t in m.tests.items()}
    sensitivity = {}
    for param, grid in first.sensitivity.items():
        sensitivity[param] = {point: {k: stats.pool([m.sensitivity[param][point][k] for m in measurements])
                                      for k in checks} for point, checks in grid.items()}
    return Measurement(
        statistics={k: stats.pool([m.statistics[k] for m in measurements]) for k in names},
        n=first.n, values=values, tables=first.tables, figures=first.figures, tests=tests,
        notes=_notes(measurements, seeds),
        sensitivity=sensitivity)


def _notes(measurements: list[Measurement], seeds: tuple[int, ...]) -> list[str]:
    """The first seed's notes, any other seed's that differ (marked with its seed), and what the tables show."""
    out = list(measurements[0].notes)
    for s, m in zip(seeds[1:], measurements[1:]):
        out += [f"seed {s}: {n}" for n in m.notes if n not in measurements[0].notes]
    return out + [f"tables and figures show seed {seeds[0]}; statistics pool seeds {list(seeds)}"]


def coverage(seeds: tuple[int, ...], *, external: bool = False, scope: str | None = None) -> str:
    """Which sources of variance the deciding interval covers, in words for the report (``scope``: the one that
    decided, "models" or "recipe"; by default the recipe scope when there are 2 seeds or more, never for an
    external model)."""
    k = len(seeds)
    scope = scope or ("recipe" if k > 1 and not external else "models")
    if k == 1:
        return ("these models: the evaluation images (and the method's draws on them); one training seed, so "
                "neither training nor the method's seed varies")
    if external:
        return (f"these models: the evaluation images and the method's random draws ({k} seeds); not training: an "
                f"external model is one fixed model")
    if scope == "models":
        return (f"these models: the evaluation images and the method's draws on them, the {k} trained models fixed "
                f"(the recipe-scope interval over the {k} seeds is shown with each statistic)")
    return (f"this training recipe: training seeds ({k}), the method's random draws (they follow the seed) and the "
            f"evaluation images (random effects over seeds, crossed with the shared images)")
