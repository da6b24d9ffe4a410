"""What an analysis hands to a claim's check: statistics with intervals, figures and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .stats import Estimate, TestResult


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
