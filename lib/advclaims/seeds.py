"""Training seeds as a statistical unit: each claim instance runs once per seed and its statistics pool.

A fixture whose value depends on the training seed takes ``repro_seed`` (directly or through another
fixture): models train with that seed, and the method's own random draws (attack random starts, boundary
points, random bases, bottleneck noise, targets) follow it. ``run_per_seed`` calls a claim test once per
seed of the budget (``--repro-seeds``), re-resolving only the seed-dependent fixtures for the seeds after
the first; everything else (data, the pipeline, session memos) is shared. ``pool`` turns the per-seed
Measurements into one whose statistics come from a hierarchical bootstrap (seeds, then images within a
seed, paired designs staying paired because each seed's statistic is computed as before).
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
    tables and figures of the first seed, hypothesis tests of every seed."""
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
        n=sum(m.n for m in measurements), values=values, tables=first.tables, figures=first.figures, tests=tests,
        notes=_notes(measurements, seeds),
        sensitivity=sensitivity)


def _notes(measurements: list[Measurement], seeds: tuple[int, ...]) -> list[str]:
    """The first seed's notes, any other seed's that differ (marked with its seed), and what the tables show."""
    out = list(measurements[0].notes)
    for s, m in zip(seeds[1:], measurements[1:]):
        out += [f"seed {s}: {n}" for n in m.notes if n not in measurements[0].notes]
    return out + [f"tables and figures show seed {seeds[0]}; statistics pool seeds {list(seeds)}"]


def coverage(seeds: tuple[int, ...], *, external: bool = False) -> str:
    """Which sources of variance a pooled interval covers, in words for the report."""
    if len(seeds) == 1:
        return "evaluation noise only (one training seed: neither training nor the method's random draws vary)"
    if external:
        return (f"the method's random draws ({len(seeds)} seeds) and the evaluation images; not training: an "
                f"external model is one fixed model")
    return (f"training seeds ({len(seeds)}), the method's random draws (they follow the seed) and the "
            f"evaluation images (hierarchical bootstrap)")
