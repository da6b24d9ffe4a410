"""expected/: what each claim asserts, the paper's figures, and the verdict expected per setting.

One TOML file per paper (``expected/<paper>.toml``); ``expected/README.md`` defines every field.
The loader validates everything up front: a malformed file is an error that names the file, the
claim and the field, never a silent default.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from advclaims import budgets as budgets_mod
from advclaims import data as data_mod
from advclaims.verdict.stats import COMPARATORS, Verdict

PAPERS = ("local_properties", "high_frequency", "info_bottleneck", "curvature")  # the four papers, in catalogue order
PAPER_KEY = re.compile(r"[a-z][a-z0-9_]*$")  # a paper's key: its file's stem, its marker, its claims module's suffix


def claim_order(cid: str) -> tuple:
    """Claim ids in their papers' order: LP-2 before LP-10 (the prefix, then the number)."""
    m = re.match(r"([A-Z]+)-(\d+)$", cid)
    return (m.group(1), int(m.group(2))) if m else (cid, 0)


def default_dir() -> Path:
    """The expected/ folder outside a pytest session (a notebook, ``advclaims claims``): $ADVCLAIMS_EXPECTED, else
    ./expected in the working directory. A pytest session takes --repro-expected or the repro_expected ini key."""
    env = os.environ.get("ADVCLAIMS_EXPECTED")
    return Path(env).expanduser() if env else Path.cwd() / "expected"


class ExpectedError(ValueError):
    """expected/ is malformed; the message names file, claim and field."""


BASES = ("paper", "protocol")  # where a threshold or a parameter comes from


@dataclass(frozen=True)
class CheckSpec:
    statistic: str
    description: str
    comparator: str
    threshold: float
    paper: float | None = None
    tolerance: float | None = None
    basis: str | None = None               # "paper" (the paper states it) or "protocol" (we chose it)
    basis_note: str | None = None          # paper: the table, figure or sentence; protocol: why we chose it
    threshold_range: tuple[float, float] | None = None   # protocol thresholds: the range we would also defend


@dataclass(frozen=True)
class ParameterSpec:
    """A free parameter of our protocol (not the paper's): the verdict is reported across its range."""

    name: str
    description: str
    default: float
    values: tuple[float, ...]              # the range, as the values the analysis measures at (default among them)
    basis_note: str


@dataclass(frozen=True)
class ValueSpec:
    statistic: str
    description: str
    paper: float
    tolerance: float


@dataclass(frozen=True)
class Expectation:
    verdict: Verdict
    reason: str | None = None
    matched: str = "default"       # which key of the expect table applied
    # verdicts also measured here in equivalent runs (retrainings that differ only in float rounding, e.g. the
    # CPU thread count): the evidence at this budget does not settle the verdict; such a run is "unstable"
    also_seen: tuple[Verdict, ...] = ()

    def accepts(self, verdict: str) -> bool:
        return verdict == self.verdict.value or verdict in {v.value for v in self.also_seen}


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    paper: str
    title: str
    source: str
    checks: tuple[CheckSpec, ...]
    values: tuple[ValueSpec, ...] = ()
    paper_setting: dict = field(default_factory=dict)
    expect: dict = field(default_factory=dict)     # "dataset.budget" -> Expectation
    protocol_note: str | None = None
    parameters: tuple[ParameterSpec, ...] = ()
    statement: str | None = None                   # the claim as the catalogue states it: what to measure, when it holds

    def expectation(self, dataset: str, budget: str, variants: tuple[str, ...] = ()) -> Expectation:
        """Most specific first: dataset.budget.variant (a test parameter such as an architecture),
        dataset.budget, dataset.*, *.budget, *.*; default reproduced."""
        keys = [f"{dataset}.{budget}.{v}" for v in variants]
        for key in keys + [f"{dataset}.{budget}", f"{dataset}.*", f"*.{budget}", "*.*"]:
            if key in self.expect:
                return self.expect[key]
        return Expectation(Verdict.REPRODUCED)

    def in_paper_setting(self, dataset: str, budget: str) -> bool:
        s = self.paper_setting
        return bool(s) and s.get("dataset") == dataset and s.get("budget", "paper") == budget


def _need(table: dict, key: str, kind, where: str):
    if key not in table:
        raise ExpectedError(f"{where}: missing field '{key}'")
    value = table[key]
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ExpectedError(f"{where}: field '{key}' must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, kind):
        raise ExpectedError(f"{where}: field '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _optional_number(table: dict, key: str, where: str) -> float | None:
    return None if key not in table else _need(table, key, float, where)


def _parse_expect(table: dict, where: str) -> dict:
    out = {}
    for key, entry in table.items():
        w = f"{where}.expect.{key!r}"
        parts = key.split(".")
        if len(parts) not in (2, 3) or not all(parts):
            raise ExpectedError(f"{w}: keys are 'dataset.budget' (either may be '*') or 'dataset.budget.variant'")
        ds, bud = parts[:2]
        if len(parts) == 3 and "*" in parts:
            raise ExpectedError(f"{w}: a 'dataset.budget.variant' key names its dataset and budget (no '*')")
        if ds != "*" and ds not in data_mod.DATASETS:
            raise ExpectedError(f"{w}: unknown dataset {ds!r}; known: {', '.join(sorted(data_mod.DATASETS))}")
        if bud != "*" and bud not in budgets_mod.NAMES:
            raise ExpectedError(f"{w}: unknown budget {bud!r}; known: {', '.join(budgets_mod.NAMES)}")
        if not isinstance(entry, dict):
            raise ExpectedError(f"{w}: must be a table with 'verdict' and 'reason'")
        raw = _need(entry, "verdict", str, w)
        try:
            v = Verdict(raw)
        except ValueError:
            raise ExpectedError(f"{w}: verdict must be one of {[x.value for x in Verdict]}, got {raw!r}") from None
        reason = entry.get("reason")
        also = entry.get("also_seen", [])
        if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
            raise ExpectedError(f"{w}: also_seen must be a list of verdicts, got {also!r}")
        try:
            also_seen = tuple(Verdict(a) for a in also)
        except ValueError:
            raise ExpectedError(f"{w}: also_seen holds verdicts, each one of {[x.value for x in Verdict]}, "
                                f"got {also!r}") from None
        if v in also_seen or len(set(also_seen)) != len(also_seen):
            raise ExpectedError(f"{w}: also_seen lists verdicts other than 'verdict', each once, got {also!r}")
        if {Verdict.REPRODUCED, Verdict.CONTRADICTED} <= {v, *also_seen}:
            raise ExpectedError(f"{w}: verdict {v.value!r} with also_seen {also!r} accepts both reproduced and "
                                f"contradicted, so the test could never fail; record the verdict the evidence gives")
        if (v is not Verdict.REPRODUCED or also_seen) and not (isinstance(reason, str) and reason.strip()):
            raise ExpectedError(f"{w}: a verdict other than 'reproduced', or an also_seen, needs a 'reason' "
                                f"(the finding, with what each verdict measured)")
        unknown = set(entry) - {"verdict", "reason", "also_seen"}
        if unknown:
            raise ExpectedError(f"{w}: unknown field(s) {sorted(unknown)}; fields: verdict, reason, also_seen")
        out[key] = Expectation(v, reason, key, also_seen)
    return out


def _parse_claim(cid: str, table: dict, paper: str, where: str) -> ClaimSpec:
    w = f"{where}: claims.{cid}"
    if not isinstance(table, dict):
        raise ExpectedError(f"{w}: must be a table")
    raw_checks = table.get("checks")
    if not isinstance(raw_checks, list) or not raw_checks:
        raise ExpectedError(f"{w}: needs at least one [[claims.{cid}.checks]] entry")
    checks, seen = [], set()
    for i, c in enumerate(raw_checks):
        wc = f"{w}.checks[{i}]"
        if not isinstance(c, dict):
            raise ExpectedError(f"{wc}: must be a table")
        comparator = _need(c, "comparator", str, wc)
        if comparator not in COMPARATORS:
            raise ExpectedError(f"{wc}: comparator must be one of {COMPARATORS}, got {comparator!r}")
        name = _need(c, "statistic", str, wc)
        if name in seen:
            raise ExpectedError(f"{wc}: statistic {name!r} is checked twice")
        seen.add(name)
        basis, note = _basis(c, wc)
        threshold = _need(c, "threshold", float, wc)
        span = None
        if "threshold_range" in c:
            span = c["threshold_range"]
            if (not isinstance(span, list) or len(span) != 2 or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in span)
                    or not span[0] <= threshold <= span[1]):
                raise ExpectedError(f"{wc}: 'threshold_range' must be [low, high] around the threshold {threshold}")
            if basis == "paper":
                raise ExpectedError(f"{wc}: a threshold the paper states has no range of ours ('threshold_range')")
            span = (float(span[0]), float(span[1]))
        checks.append(CheckSpec(name, _need(c, "description", str, wc), comparator, threshold,
                                _optional_number(c, "paper", wc), _optional_number(c, "tolerance", wc),
                                basis, note, span))
    raw_values = table.get("values", [])
    if not isinstance(raw_values, list):
        raise ExpectedError(f"{w}.values: must be a list of [[claims.{cid}.values]] tables")
    values = []
    for i, v in enumerate(raw_values):
        wv = f"{w}.values[{i}]"
        if not isinstance(v, dict):
            raise ExpectedError(f"{wv}: must be a table")
        tol = _need(v, "tolerance", float, wv)
        if tol < 0:
            raise ExpectedError(f"{wv}: tolerance must be >= 0")
        values.append(ValueSpec(_need(v, "statistic", str, wv), _need(v, "description", str, wv),
                                _need(v, "paper", float, wv), tol))
    expect = table.get("expect", {})
    if not isinstance(expect, dict):
        raise ExpectedError(f"{w}.expect: must be a table of 'dataset.budget' entries")
    note = table.get("protocol_note")
    if note is not None and not isinstance(note, str):
        raise ExpectedError(f"{w}: field 'protocol_note' must be a str, got {note!r}")
    return ClaimSpec(cid, paper, _need(table, "title", str, w), _need(table, "source", str, w), tuple(checks),
                     tuple(values), _parse_setting(table.get("paper_setting", {}), w), _parse_expect(expect, w), note,
                     _parse_parameters(table.get("parameters", []), w), _optional_text(table, "statement", w))


def _optional_text(table: dict, key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise ExpectedError(f"{where}: field '{key}' must be a non-empty str, got {value!r}")
    return value


def _basis(table: dict, where: str) -> tuple[str | None, str | None]:
    """basis = "paper" | "protocol" with its basis_note: every check says where its threshold comes from."""
    basis = _need(table, "basis", str, where)
    if basis not in BASES:
        raise ExpectedError(f"{where}: basis must be one of {BASES}, got {basis!r}")
    note = _need(table, "basis_note", str, where)
    if not note.strip():
        raise ExpectedError(f"{where}: basis_note must say where the paper states it, or why we chose it")
    return basis, note


def _parse_parameters(raw, where: str) -> tuple[ParameterSpec, ...]:
    if not isinstance(raw, list):
        raise ExpectedError(f"{where}.parameters: must be a list of [[claims.<ID>.parameters]] tables")
    out = []
    for i, p in enumerate(raw):
        wp = f"{where}.parameters[{i}]"
        if not isinstance(p, dict):
            raise ExpectedError(f"{wp}: must be a table")
        default = _need(p, "default", float, wp)
        values = p.get("values")
        if (not isinstance(values, list) or len(values) < 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
                or default not in values or sorted(values) != values):
            raise ExpectedError(f"{wp}: 'values' must be at least two increasing numbers, the default among them")
        out.append(ParameterSpec(_need(p, "name", str, wp), _need(p, "description", str, wp), default,
                                 tuple(float(v) for v in values), _need(p, "basis_note", str, wp)))
    return tuple(out)


def _parse_setting(setting, where: str) -> dict:
    """paper_setting = { dataset = "...", budget = "..." }: both known names (budget defaults to paper)."""
    w = f"{where}.paper_setting"
    if not isinstance(setting, dict) or (setting and "dataset" not in setting):
        raise ExpectedError(f"{w}: must be a table with 'dataset' (and optionally 'budget')")
    if setting and (not isinstance(setting["dataset"], str) or setting["dataset"] not in data_mod.DATASETS):
        raise ExpectedError(f"{w}: unknown dataset {setting['dataset']!r}; known: {', '.join(sorted(data_mod.DATASETS))}")
    budget = setting.get("budget", "paper")
    if not isinstance(budget, str) or budget not in budgets_mod.NAMES:
        raise ExpectedError(f"{w}: unknown budget {budget!r}; known: {', '.join(budgets_mod.NAMES)}")
    return dict(setting)


def parse(text: str, *, paper: str, where: str = "<expected>") -> dict[str, ClaimSpec]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ExpectedError(f"{where}: not valid TOML ({err})") from None
    claims = doc.get("claims")
    if not isinstance(claims, dict) or not claims:
        raise ExpectedError(f"{where}: needs a [claims.<ID>] table per claim")
    return {cid: _parse_claim(cid, table, paper, where) for cid, table in claims.items()}


def paper_keys(specs: dict[str, ClaimSpec]) -> list[str]:
    """The papers of ``specs``: the four in catalogue order, then any added ones alphabetically."""
    found = {s.paper for s in specs.values()}
    return [p for p in PAPERS if p in found] + sorted(found - set(PAPERS))


def papers(directory: str | Path | None = None) -> dict[str, dict]:
    """Each paper file's ``[paper]`` table (title, authors, venue, note): whom the claims are from."""
    directory = Path(directory) if directory is not None else default_dir()
    out = {}
    for path in sorted(directory.glob("*.toml")):
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("paper", {})
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ExpectedError(f"{path}: [paper] must be a table of strings (title, authors, venue, note)")
        out[path.stem] = table
    return out


def load(directory: str | Path | None = None) -> dict[str, ClaimSpec]:
    """Every claim of every paper file present in ``directory`` (default: ``default_dir()``)."""
    directory = Path(directory) if directory is not None else default_dir()
    if not directory.is_dir():
        raise ExpectedError(f"expected/ folder not found at {directory}: run from the checkout, or set "
                            f"$ADVCLAIMS_EXPECTED (a pytest session: --repro-expected or the repro_expected ini key)")
    out: dict[str, ClaimSpec] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.stem not in PAPERS and not (PAPER_KEY.match(path.stem) and "paper" in tomllib.loads(
                path.read_text(encoding="utf-8", errors="replace"))):
            raise ExpectedError(f"{path}: file name must be one of {', '.join(PAPERS)} (.toml), or a new paper's key "
                                f"(lower case, digits, _) in a file with a [paper] table (docs/adding-a-claim.md)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ExpectedError(f"{path}: cannot be read as UTF-8 TOML text ({err})") from None
        for cid, spec in parse(text, paper=path.stem, where=str(path)).items():
            if cid in out:
                raise ExpectedError(f"{path}: claim {cid} is also defined in {out[cid].paper}.toml")
            out[cid] = spec
    return out
