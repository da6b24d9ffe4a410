"""What an analysis hands to a claim's check (a ``Measurement``: statistics with intervals, figures and tables), and
what it declares it measures (``measures``): expected/ names statistics, and those names are held against the
analysis's declaration when a session starts, not found missing after the analysis ran."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from advclaims.verdict.estimate import Estimate, TestResult, from_payload, to_payload


@dataclass
class Measurement:
    """One claim's measurement.

    statistics: named estimates with intervals; expected/ checks them by name.
    values: point figures (accuracies, magnitudes) shown beside the paper's and checked against it
        in the paper's setting.
    tables: named lists of row dicts, for the report (e.g. Table 1 of a paper).
    figures: named callables that draw a PNG at the path given; run only when a report is written.
    tests: hypothesis tests run alongside (reported, not used for the verdict).
    sensitivity: the checked statistics again at other values of a free protocol parameter,
        ``{parameter: {value label: {statistic: Estimate}}}`` (expected/ declares the range): the report
        says "depends on <parameter>" where the verdict changes inside it.
    """

    statistics: dict[str, Estimate]
    n: int
    values: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    tests: dict[str, TestResult] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sensitivity: dict[str, dict[str, dict[str, Estimate]]] = field(default_factory=dict)

    def __post_init__(self):
        for name, est in self.statistics.items():
            if not isinstance(est, Estimate):
                raise TypeError(f"statistic {name!r} must be an Estimate, got {type(est).__name__}")

    def to_payload(self) -> dict:
        """The Measurement as JSON-able data (figures stay behind: they are drawn where they were measured)."""
        return {"statistics": {k: to_payload(e) for k, e in self.statistics.items()}, "n": self.n,
                "values": self.values, "tables": self.tables,
                "tests": {k: vars(t) for k, t in self.tests.items()}, "notes": list(self.notes),
                "sensitivity": {p: {v: {k: to_payload(e) for k, e in stats.items()} for v, stats in grid.items()}
                                for p, grid in self.sensitivity.items()}}

    @classmethod
    def from_payload(cls, d: dict) -> "Measurement":
        return cls(statistics={k: from_payload(e) for k, e in d["statistics"].items()}, n=d["n"], values=d["values"],
                   tables=d["tables"], tests={k: TestResult(**t) for k, t in d["tests"].items()}, notes=d["notes"],
                   sensitivity={p: {v: {k: from_payload(e) for k, e in stats.items()} for v, stats in grid.items()}
                                for p, grid in d["sensitivity"].items()})


@dataclass(frozen=True)
class Declared:
    """What the analysis of a claim measures: its function, the statistic names its Measurement holds, and the
    protocol parameters its sensitivity grid covers."""

    claim: str
    function: str
    statistics: frozenset[str]
    parameters: frozenset[str] = frozenset()


def measures(claim: str, statistics: Iterable[str], *, parameters: Iterable[str] = ()):
    """Declare, on an analysis function, the claim it measures and every statistic name (and sensitivity parameter)
    its Measurement holds::

        @measures("LP-7", ["fgsm_minus_pgd20_accuracy"])
        def fgsm_versus_pgd(model, fgsm_set, pgd_set) -> Measurement: ...

    The declaration stays on the function (``fn.measures``; one function may measure several claims). A session
    finds it through the claim test's module, which imports the analysis it calls, and refuses, before any work, an
    expected/ check of a name the analysis does not declare; a Measurement that holds a name it did not declare is an
    error of the analysis."""
    def mark(fn):
        fn.measures = (*getattr(fn, "measures", ()), Declared(claim, f"{fn.__module__}.{fn.__qualname__}",
                                                               frozenset(statistics), frozenset(parameters)))
        return fn
    return mark


def declarations(namespace: dict, claim: str) -> list[Declared]:
    """The declarations for ``claim`` of the functions in ``namespace`` (a claim test module's globals)."""
    return [d for obj in namespace.values() if isinstance(getattr(obj, "measures", None), tuple)
            for d in obj.measures if isinstance(d, Declared) and d.claim == claim]


def unknown_names(spec, declared: Declared) -> list[str]:
    """One line per expected/ check or parameter of ``spec`` (a ClaimSpec) that ``declared`` does not measure."""
    out = []
    for name, known, what in ([(c.statistic, declared.statistics, "statistic") for c in spec.checks]
                              + [(p.name, declared.parameters, "parameter") for p in spec.parameters]):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out.append(f"expected/{spec.paper}.toml, claim {spec.id}: {what} {name!r} is not one its analysis "
                       f"{declared.function} measures" + (f" (did you mean {close[0]!r}?)" if close else "")
                       + f"; it measures {', '.join(sorted(known)) or 'none'}")
    return out
