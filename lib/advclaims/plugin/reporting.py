"""What the session shows and draws: a claim's figures, the one-line error of an instance that raised, the error
row of an instance whose xdist worker died, and the terminal's table of claims (the report files themselves are
``advclaims.verdict.report``'s)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from advclaims import data as data_mod
from advclaims.checkpoints import external as external_mod
from advclaims.checkpoints.health import ModelUnhealthy
from advclaims.verdict import records
from advclaims.verdict import report as report_mod
from advclaims.verdict.measurement import Measurement

if TYPE_CHECKING:
    from advclaims.plugin.session import ReproSession

_ONE_LINE = (external_mod.ModelRefused, external_mod.StagesMissing, external_mod.NoFeatureSplit, ModelUnhealthy,
             records.MeasurementMismatch)  # errors whose message already says what to do
ERROR_CHARS = 400  # an error row keeps this much of an exception's first line (a user's one-line error: all of it)


def draw(instance: records.Instance, m: Measurement, report_dir: Path | None) -> tuple[list[str], list[str]]:
    """The claim's figures under ``report_dir/figures`` (none without a report): their paths, and one line per
    figure that could not be drawn (a broken figure must not lose the measured verdict)."""
    figures, errors = [], []
    if not report_dir:
        return figures, errors
    for name, make in m.figures.items():
        rel = Path("figures") / f"{instance.spec.id}_{instance.variant or instance.dataset}_{name}.png"
        try:
            make(Path(report_dir) / rel)
            figures.append(str(rel))
        except Exception as err:
            errors.append(f"{rel}: {type(err).__name__}: {err}")
            warnings.warn(f"figure {rel} could not be drawn: {err}")
    return figures, errors


def error_line(excinfo, report) -> str:
    """One line for an error row: the exception's type, its first line, and where it was raised. A one-line
    error of the suite's (a refused model, stages missing, the health gate) is kept whole: it names what to
    pass; any other message is cut, as a traceback is."""
    if excinfo is None:
        text = str(report.longrepr).strip().splitlines()
        return text[-1][:300] if text else "failed"
    err = excinfo.value
    first = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, _ONE_LINE):
        return f"{type(err).__name__}: {first}"
    entry = excinfo.traceback[-1]
    return f"{type(err).__name__}: {first[:ERROR_CHARS]} (at {Path(str(entry.path)).name}:{entry.lineno + 1})"


def claim_of(rootpath: Path, nodeid: str) -> str | None:
    """The claim id of a test by its node id, read off its ``@pytest.mark.claim("ID")`` in the source (the
    controller of an xdist run has no items to ask), or None when it has none."""
    parts = nodeid.split("::")
    try:
        tree = ast.parse((Path(rootpath) / parts[0]).read_text())
    except (OSError, SyntaxError, ValueError):
        return None

    def claim(node) -> str | None:
        for d in getattr(node, "decorator_list", []):
            if (isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "claim" and d.args
                    and isinstance(d.args[0], ast.Constant) and isinstance(d.args[0].value, str)):
                return d.args[0].value
        return None

    scope, found = tree.body, None
    for name in [p.split("[")[0] for p in parts[1:]]:
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            return None
        found = claim(node) or found
        scope = getattr(node, "body", [])
    return found


def crash_record(session: "ReproSession", nodeid: str, line: str) -> dict | None:
    """The error row of a claim instance whose xdist worker died (killed for memory, a segfault) and so sent no
    record; None for a node that is no claim instance."""
    cid = claim_of(session.config.rootpath, nodeid)
    if cid not in session.catalogue:
        return None
    variant = nodeid.rsplit("[", 1)[1].rstrip("]") if nodeid.endswith("]") else ""
    parts = variant.split("-")
    dataset = next((p for p in parts if p in data_mod.DATASETS), None)
    if dataset is None:
        return None
    error = (f"{line}: the process died (killed for memory or a segfault, as a rule) and the instance sent no "
             f"record; run it alone to see why")
    models = ({"key": "external", "source": {"kind": "external"}},) if session.settings.external_models else ()
    instance = records.Instance(session.catalogue[cid], dataset, session.budget.name, session.seeds, variant,
                                tuple(p for p in parts if p != dataset), nodeid, session.proxy(dataset), models)
    record = records.errored(instance, error, crashed=True)
    record.models = []
    return record.as_dict()


def model_lines(recs: list[dict]) -> list[str]:
    """For runs on a user's model: each model of the suite's own it was compared with (a partner the suite
    trained or loaded), and what the health gate's reference probe held each user's model against."""
    lines, seen = [], set()
    for r in recs:
        models = r.get("models") or []
        if not any((m.get("source") or {}).get("kind") != "trained" for m in models):
            continue
        for m in models:
            src = m.get("source") or {}
            if m["key"] in seen:
                continue
            seen.add(m["key"])
            if src.get("kind") == "trained":
                lines.append(f"{r['claim']} on {r.get('variant', r['dataset'])}: compared your model with the suite's "
                             f"own {m['label']} ({m.get('arch')} on {m.get('dataset')}, trained at the "
                             f"{src.get('budget')} budget, store key {m['key']}): no --repro-model gave that role")
            elif (src.get("reference") or {}).get("clean_accuracy") is not None:
                lines.append(f"your {m['label']}: clean {m.get('clean_accuracy') or float('nan'):.1%}, held against "
                             f"{report_mod.reference_text(src['reference'])} by the health gate's reference probe")
    return lines


def terminal_summary(session: "ReproSession", tr) -> None:
    """The claims table at the end of the run, the failures decided there (pooled seeds), the summary's counts."""
    recs = list(session.records.values())
    if not recs:
        return
    tr.section("advclaims: claims")
    for r in sorted(recs, key=lambda r: (report_mod.claim_order(r["claim"]), r["dataset"])):
        c = report_mod.headline(r)
        more = f" +{len(r['checks']) - 1}" if len(r["checks"]) > 1 else ""
        depends = f" [depends on {', '.join(r['depends_on'])}]" if r.get("depends_on") else ""
        tr.write_line(f"{r['claim']:<6} {r.get('variant', r['dataset']):<14} {r['verdict']:<13} {r['outcome']:<14} "
                      f"{c['statistic']}{more} = {report_mod.check_interval(c)} ({c['comparator']} "
                      f"{c['threshold']:g}){depends}")
    for line in model_lines(recs):
        tr.write_line(line)
    for lines in session.failures:
        tr.write_line("")
        for line in lines:
            tr.write_line(line, red=True)
    s = report_mod.summary(recs)
    if s.get("errors"):
        tr.write_line(f"{s['errors']} of {s['total']} instances raised an error (outcome error): no verdict; "
                      f"the report has a row for each with its one line")
    tr.write_line(report_mod.counts_line(s))
    if session.settings.report_dir:
        tr.write_line(f"report: {session.settings.report_dir / 'report.md'}")
    for line in session.comparison:
        tr.write_line(line)
