"""Training seeds pooled: one Measurement per seed (every seed measured on the same evaluation images, each seed's
bootstrap drawing the same image resamples) becomes one, whose statistics ``stats.pool`` gives in both scopes,
"these models" and "this training recipe" (docs/statistics.md); the budget chooses which decides.

Each seed is a test item of its own (``advclaims.plugin`` parametrises ``repro_seed``); the session pools their
Measurements where it collects the records.
"""

from __future__ import annotations

from advclaims.verdict import stats
from advclaims.verdict.measurement import Measurement


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
