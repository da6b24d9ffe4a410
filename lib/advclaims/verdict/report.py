"""The report: report.json for machines, report.md for people, saved runs and their comparison.

Records are plain dicts (one per claim instance) so they cross pytest-xdist workers as JSON.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from advclaims import __version__
from advclaims.verdict.expected import claim_order


VERDICT_MARK = {"reproduced": "✅ reproduced", "contradicted": "❌ contradicted", "inconclusive": "❔ inconclusive"}


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    if isinstance(x, (list, tuple)) and len(x) == 2 and all(isinstance(v, (int, float)) for v in x):
        return f"[{_fmt(x[0])}, {_fmt(x[1])}]"
    return str(x).replace("|", "\\|")


def check_interval(c: dict) -> str:
    """A check's value and interval; a trend's value with its one-sided p-values and test instead; the
    multiplicity-adjusted interval when it (not the nominal one) decided against a contradiction."""
    if c.get("pvalues"):
        p = c["pvalues"]
        return (f"rho {_fmt(c['value'])} (p {_fmt(p['greater'], 3)} increasing, {_fmt(p['less'], 3)} decreasing; "
                f"{c['test']})")
    level = c.get("confidence", 0.95)
    note = "" if abs(level - 0.95) < 1e-9 else f" ({level:.0%} CI)"
    if c.get("adjusted_low") is not None:
        note += (f"; at {c['contradiction_level']:.1%} [{_fmt(c['adjusted_low'])}, {_fmt(c['adjusted_high'])}]")
    return f"{_fmt(c['value'])} [{_fmt(c['low'])}, {_fmt(c['high'])}]{note}"


def scope_line(r: dict) -> str:
    """The claim's scope, what it covers and its levels, e.g. "scope: these models (the evaluation images ...);
    reproduction at 95%, contradiction at 99.6% for 13 checks"."""
    m = r.get("deciding_checks", 0)
    line = (f"scope: {r['scope_name']} ({r['covers']}); reproduction at {r.get('level', 0.95):.0%}, contradiction at "
            f"{r['contradiction_level']:.1%}" + (f" for {m} deciding checks (Bonferroni)" if m > 1 else ""))
    return line + (f". {r['scope_note']}" if r.get("scope_note") else "")


def _per_seed(c: dict) -> str:
    """Each training seed's value and interval, or a dash when one seed was run."""
    seeds = c.get("per_seed") or []
    return "; ".join(f"{_fmt(e['value'])} [{_fmt(e['low'])}, {_fmt(e['high'])}]" for e in seeds) or "–"


def headline(r: dict) -> dict:
    """The check that decides the claim's verdict (the first one with that verdict) for one-line views."""
    return next((c for c in r["checks"] if c["verdict"] == r["verdict"]),
                next((c for c in r["checks"] if c["verdict"] != "uninformative"), r["checks"][0]))


HELD = ("passed", "known finding", "unstable", "failed")  # the outcomes of instances held against expected/


def summary(records: list[dict]) -> dict:
    """The counts of a run. Verdicts count the instances that have one (an error row has none); "held" counts
    those held against `expected/` (not proxy data, not a user's model, not an error), "as_expected" those of
    them that agree with it; errors are counted apart."""
    counts = {"reproduced": 0, "contradicted": 0, "inconclusive": 0}
    for r in records:
        if r["outcome"] != "error":
            counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    counts["as_expected"] = sum(r["outcome"] in ("passed", "known finding", "unstable") for r in records)
    counts["held"] = sum(r["outcome"] in HELD for r in records)
    counts["proxy"] = sum(r["outcome"] == "proxy data" for r in records)
    counts["own_model"] = sum(r["outcome"] == "own model" for r in records)
    counts["errors"] = sum(r["outcome"] == "error" for r in records)
    counts["total"] = len(records)
    return counts


def counts_line(s: dict) -> str:
    """The summary in one line: verdicts of the instances that have one, how many of those held against
    `expected/` agree with it, and apart: errors (no verdict), a user's models, proxy data."""
    held = s.get("held", s["total"] - s.get("proxy", 0) - s.get("own_model", 0) - s.get("errors", 0))
    line = (f"verdicts: {s['reproduced']} reproduced, {s['contradicted']} contradicted, {s['inconclusive']} "
            f"inconclusive; {s['as_expected']} of {held} as `expected/` records")
    if s.get("errors"):
        line += f"; {s['errors']} raised an error (no verdict, counted in none of the above)"
    if s.get("own_model"):
        line += (f"; {s['own_model']} on your own models (verdicts shown, never held against `expected/`'s records "
                 f"about the suite's models)")
    if s.get("proxy"):
        line += (f"; {s['proxy']} on proxy data (another dataset's content in this one's layout: verdicts recorded, "
                 f"never held against `expected/`)")
    return line


def build(records: list[dict], *, budget: str, argv: list[str], machine: dict | None = None,
          commit: str | None = None, determinism: dict | None = None) -> dict:
    """report.json's content; ``machine`` and ``commit`` come from the caller (advclaims.checkpoints.provenance),
    so that this layer reads no device."""
    records = sorted(records, key=lambda r: (claim_order(r["claim"]), r.get("variant", r["dataset"])))
    return {
        "advclaims": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": machine or {},
        "budget": budget,
        "command": " ".join(argv),
        "summary": summary(records),
        "determinism": determinism or {},
        "models": models_table(records),
        "profile": profile_totals(records),
        "claims": records,
    }


_PHASES = ("training", "attacks", "store", "analysis", "bootstrap")  # advclaims.timing.PHASES (no import: a layer)


def profile_totals(records: list[dict]) -> dict:
    """Seconds per phase over every instance of the run (each instance's training is the training it was the first
    to need), their instance-seconds and bootstrap resamples."""
    profiled = [r for r in records if r.get("profile")]
    out = {p: round(sum(r["profile"].get(p, 0.0) for r in profiled), 1) for p in _PHASES}
    out["instance_seconds"] = round(sum(r.get("wall_seconds", 0.0) for r in records), 1)
    out["bootstrap_resamples"] = sum(r["profile"].get("counts", {}).get("bootstrap_resamples", 0) for r in profiled)
    return out


def _profile_lines(report: dict) -> list[str]:
    rows = sorted((r for r in report["claims"] if r.get("profile")), key=lambda r: -r.get("wall_seconds", 0.0))
    if not rows:
        return []
    total = report.get("profile") or profile_totals(report["claims"])
    lines = ["", "## Where the time went", "",
             "Seconds per instance, by phase (advclaims.timing): *training* the models it was the first to need, "
             "*attacks* the adversarial sets it made (or attacks it ran), *store* loading and saving, *bootstrap* "
             "its intervals, *analysis* the rest.", "",
             "| claim | instance | wall | " + " | ".join(_PHASES) + " |", "|---|---|---|" + "---|" * len(_PHASES)]
    for r in rows:
        lines.append(f"| {r['claim']} | {r.get('variant', r['dataset'])} | {r['wall_seconds']:.1f} | "
                     + " | ".join(f"{r['profile'].get(p, 0.0):.1f}" for p in _PHASES) + " |")
    lines.append(f"| all | {len(rows)} instances | {total['instance_seconds']:.1f} | "
                 + " | ".join(f"{total[p]:.1f}" for p in _PHASES) + " |")
    return lines


def reference_text(ref: dict) -> str:
    """What the reference probe held a user's model against, e.g. "the suite's own STD resnet18 at the smoke
    budget (80.2%; store key ..., trained now for the probe)"."""
    made = ""
    if ref.get("key"):
        made = (f"; store key {ref['key']}, " + ("trained now for the probe" if ref.get("trained_now")
                                                 else "loaded from the store"))
    return f"{ref['what']} ({ref['clean_accuracy']:.1%}{made})"


def models_table(records: list[dict]) -> list[dict]:
    """Every model any instance used, trained or external, once, with the instances that used it; and the
    suite's own models the health gate's reference probe held a user's model against ("reference_for")."""
    out: dict[str, dict] = {}
    for r in records:
        for m in r.get("models", []):
            row = out.setdefault(m["key"], {**m, "used_by": []})
            row["used_by"].append(f"{r['claim']}[{r.get('variant', r['dataset'])}]")
    for m in list(out.values()):
        ref = (m.get("source") or {}).get("reference") or {}
        if ref.get("key"):
            row = out.setdefault(ref["key"], {
                "key": ref["key"], "label": ref.get("label"), "arch": ref.get("arch"), "width": ref.get("width"),
                "dataset": ref.get("dataset"), "role": ref.get("role"), "seed": ref.get("seed"),
                "source": {"kind": "trained", "budget": ref.get("budget")},
                "clean_accuracy": ref.get("clean_accuracy"), "pgd20_accuracy": ref.get("pgd20_accuracy"),
                "fgsm_accuracy": ref.get("fgsm_accuracy"), "eval_images": ref.get("eval_images"),
                "healthy": ref.get("healthy"), "used_by": []})
            row.setdefault("reference_for", []).append(
                f"{m['label']} ({'trained now for the probe' if ref.get('trained_now') else 'loaded from the store'})")
    return sorted(out.values(), key=lambda m: (m.get("dataset") or "", m.get("label") or "", m.get("seed") or 0))


def _source(m: dict) -> str:
    src = m.get("source") or {}
    if src.get("kind") == "trained":
        return f"trained here ({src.get('budget')} budget)"
    what = "imported" if src.get("imported") else src.get("kind", "external")
    weights = "; ".join(f"weights {w['path']} (sha256 {w['sha256'][:12]})" for w in src.get("weights") or [])
    ref = src.get("reference") or {}
    held = (f"; reference probe: {ref['what']} ({_fmt(ref['clean_accuracy'])}"
            + (f", store key {ref['key']}" if ref.get("key") else "") + ")"
            if ref.get("clean_accuracy") is not None else "")
    return (f"{what}: {src.get('spec')} (sha256 {str(src.get('sha256'))[:12]}"
            + (f", state {src['state_sha256'][:12]}" if src.get("state_sha256") else "") + ")"
            + (f"; measured {src['measured']}" if src.get("measured") else "")
            + (f"; {weights}" if weights else "") + (f"; stages {src['stages']}" if src.get("stages") else "")
            + held)


def _model_lines(models: list[dict]) -> list[str]:
    if not models:
        return []
    lines = ["", "## Models", "",
             "Every model the claims used; accuracies on the first evaluation images, measured when it was trained or "
             "imported (PGD-20 step eps/8, random start). *published*: the accuracies the user gave for it.", "",
             "| model | arch | dataset | seed | source | clean | PGD-20 | FGSM | health gate | published | used by |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        pub = (m.get("source") or {}).get("published") or {}
        published = ", ".join(f"{k} {_fmt(v)}" for k, v in pub.items()) or "–"
        gate = "passed" if m.get("healthy") else "failed (not enforced)" if m.get("healthy") is False else "–"
        used = "; ".join(([f"{len(m['used_by'])} instances"] if m["used_by"] or not m.get("reference_for") else [])
                         + [f"the reference probe of {who}" for who in m.get("reference_for") or []])
        lines.append(f"| {m['label']} | {_fmt(m.get('arch'))} | {_fmt(m.get('dataset'))} | {_fmt(m.get('seed'))} | "
                     f"{_fmt(_source(m))} | {_fmt(m.get('clean_accuracy'))} | {_fmt(m.get('pgd20_accuracy'))} | "
                     f"{_fmt(m.get('fgsm_accuracy'))} | {gate} | {_fmt(published)} | {_fmt(used)} |")
    return lines


# what a record measured (not when, where or how long): equal across runs that must agree
_MEASURED = ("claim", "variant", "dataset", "budget", "seeds", "n", "verdict", "checks", "values", "tables", "tests",
             "sensitivity")


_TIMINGS = ("seconds", "wall_seconds", "train_seconds")  # table columns that time a step, not measure a claim


def measured(report: dict) -> dict:
    """The statistics of a report keyed by claim instance: two runs with the same seeds on the CPU
    must give equal ``measured`` dicts (wall times, including timing columns of tables, dates and
    machine are left out)."""
    def untimed(record: dict) -> dict:
        out = {k: record.get(k) for k in _MEASURED}
        out["tables"] = {name: [{c: v for c, v in row.items() if c not in _TIMINGS} if isinstance(row, dict) else row
                                for row in rows]
                         for name, rows in (record.get("tables") or {}).items()}
        out["values"] = [v for v in record.get("values") or []  # CV-1's seconds_all_classes times, not measures
                         if not str(v.get("statistic", "")).startswith("seconds")]
        return out

    return {"/".join(_key(r)): untimed(r) for r in report.get("claims", [])}


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(empty)"]
    cols = [c for c in rows[0] if not c.endswith("_ci")]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            cell = _fmt(r.get(c))
            if f"{c}_ci" in r:
                cell += " " + _fmt(r[f"{c}_ci"])
            cells.append(cell)
        out.append("| " + " | ".join(cells) + " |")
    return out


def _determinism_lines(d: dict) -> list[str]:
    if not d:
        return []
    lines = [f"- repeatability: {d['statement']}"]
    lines += [f"  - non-deterministic here: {op}" for op in d.get("nondeterministic", [])]
    if d.get("fp32_precision"):
        lines.append("  - fp32 precision (CUDA): " + ", ".join(f"{k} {v}" for k, v in d["fp32_precision"].items()))
    if "compile" in d:
        c = d["compile"]
        if not c:
            lines.append("  - torch.compile: on, nothing compiled")
        else:
            recompiles = "unknown (graph breaks)" if c.get("recompiles") is None else c["recompiles"]
            lines.append(f"  - torch.compile: {c.get('frames_ok', 0)} frames compiled in {c.get('processes', 1)} "
                         f"process(es), recompiles {recompiles}, graph breaks {c.get('graph_breaks', 0)}, eager "
                         f"fallbacks {c.get('eager_fallbacks', 0)}")
    return lines


def markdown(report: dict) -> str:
    s = report["summary"]
    m = report["machine"]
    lines = [
        "# advclaims report",
        "",
        f"- budget: **{report['budget']}**; created {report['created']}; commit {report['commit'] or 'unknown'}",
        f"- machine: {m.get('device', 'unknown')}, torch {m.get('torch', '?')}, python {m.get('python', '?')}, "
        f"{m.get('threads', '?')} threads",
        f"- command: `{report['command']}`",
        f"- {counts_line(s)}",
        *_determinism_lines(report.get("determinism") or {}),
        "",
        "A claim is *reproduced* when the 95% interval of every deciding statistic lies wholly on the claimed",
        "side of its threshold, *contradicted* when one's Bonferroni-adjusted interval (1 - 0.05/m for m deciding",
        "checks) lies wholly on the other side, *inconclusive* otherwise; a trend over models decides by its exact",
        "permutation p-values the same way. Each claim states its scope: *these models* (the checkpoints at hand)",
        "or *this training recipe* (over training seeds); see docs/statistics.md.",
        "*uninformative*: a statistic that cannot vary (saturated, or every resample gives the same value): shown,",
        "never deciding. *known finding*: the verdict is the non-reproduction `expected/` records, with its reason.",
        "*unstable*: `expected/` records that equivalent runs at this setting (retrainings that differ only in",
        "float rounding) gave different verdicts, and this run gave one of them: the evidence does not settle it.",
        "",
        "| claim | instance | deciding statistic | measured [95% CI] | claimed | paper | verdict | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["claims"]:
        c = headline(r)
        more = f" (+{len(r['checks']) - 1} more)" if len(r["checks"]) > 1 else ""
        lines.append(
            f"| {r['claim']} | {r.get('variant', r['dataset'])} | `{_fmt(c['statistic'])}`{more} | {check_interval(c)} | "
            f"{c['comparator']} {_fmt(c['threshold'])} | {_fmt(c.get('paper'))} | {VERDICT_MARK[r['verdict']]}"
            + (f" (depends on {', '.join(r['depends_on'])})" if r.get("depends_on") else "") + " | "
            f"{r['outcome']} |"
        )
    lines += _model_lines(report.get("models", []))
    lines += _profile_lines(report)
    for r in report["claims"]:
        lines += ["", f"## {r['claim']} on {r.get('variant', r['dataset'])}: {r['title']}", "",
                  f"Source: {r['source']}. Verdict: **{r['verdict']}** (expected: {r['expected']}"
                  + (f", also seen: {', '.join(r['also_seen'])}" if r.get("also_seen") else "")
                  + (f"; reason: {r['expected_reason']}" if r.get("expected_reason") else "") + f"). "
                  f"n = {r['n']} images, seeds {r['seeds']}, wall time {r['wall_seconds']:.1f} s.", ""]
        if r.get("protocol_note"):
            lines += [f"> {r['protocol_note']}", ""]
        if r.get("scope"):
            lines += [scope_line(r) + ".", ""]
        if r.get("variance"):
            lines += [f"Intervals cover: {r['variance']}.", ""]
        if r.get("unmeasurable"):
            lines += [f"Not measurable: {r['unmeasurable']}.", ""]
        if r.get("error"):
            lines += [f"**Error** (no verdict): {_fmt(r['error'])}", ""]
        if r.get("depends_on"):
            lines += [f"**Depends on {', '.join(r['depends_on'])}**: the verdict changes inside the range of a choice "
                      f"that is ours, not the paper's (see below).", ""]
        lines += ["| statistic | what | measured [95% CI] | per seed | claimed | threshold from | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for c in r["checks"]:
            basis = f"{c['basis']}: {c['basis_note']}" if c.get("basis") else "–"
            if c.get("verdict_across_threshold"):
                basis += " (verdict at " + ", ".join(f"{t}: {v}" for t, v in c["verdict_across_threshold"].items()) + ")"
            verdict = c["verdict"] + (f" ({c['uninformative']})" if c.get("uninformative") else "")
            lines.append(f"| `{_fmt(c['statistic'])}` | {_fmt(c['description'])} | {check_interval(c)} | {_per_seed(c)} | "
                         f"{c['comparator']} {_fmt(c['threshold'])} | {_fmt(basis)} | {verdict} |")
        if r.get("sensitivity"):
            lines += ["", "Verdict across our protocol parameters:", "",
                      "| parameter | value | verdict | checks |", "|---|---|---|---|"]
            for row in r["sensitivity"]:
                detail = "; ".join(f"{k} {_fmt(v['value'])} [{_fmt(v['low'])}, {_fmt(v['high'])}] {v['verdict']}"
                                   for k, v in row["checks"].items())
                lines.append(f"| {row['parameter']} | {_fmt(row['value'])}{' (default)' if row['default'] else ''} | "
                             f"{row['verdict']} | {_fmt(detail)} |")
        if r.get("values"):
            lines += ["", "Paper vs measured" + (" (checked: this is the paper's setting)" if r["paper_setting"]
                                                 else " (shown only: not the paper's setting)") + ":", "",
                      "| value | what | paper | measured | tolerance | within |", "|---|---|---|---|---|---|"]
            # values with no paper figure (paper "–") are the analysis's own, shown beside the paper's
            for v in r["values"]:
                tolerance = "–" if v.get("tolerance") is None else f"±{_fmt(v['tolerance'])}"
                lines.append(f"| `{_fmt(v['statistic'])}` | {_fmt(v['description'])} | {_fmt(v['paper'])} | "
                             f"{_fmt(v['measured'])} | {tolerance} | {_fmt(v['within'])} |")
        for name, rows in r.get("tables", {}).items():
            lines += ["", f"Table `{name}` (mean [95% CI] over images):", ""] + _table(rows)
        for note in r.get("notes", []):
            lines += ["", f"Note: {note}"]
        for t in r.get("tests", []):
            lines.append(f"\n{t['name']} ({t['alternative']}): statistic {_fmt(t['statistic'])}, p = {_fmt(t['pvalue'])}")
        for f in r.get("figures", []):
            lines += ["", f"![{r['claim']} {r['dataset']}]({f})"]
        for err in r.get("figure_errors", []):
            lines += ["", f"Figure not drawn: {err}"]
    return "\n".join(lines) + "\n"


def write(directory: str | Path, report: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (directory / "report.md").write_text(markdown(report))
    return directory


# ---------------------------------------------------------------------------------------------
# saved runs and comparison (the nightly job's drift alarm)


def save_run(storage: str | Path, report: dict) -> Path:
    """Keep a run as storage/<machine>/NNNN_<commit>_<date>.json, numbered like pytest-benchmark's."""
    folder = Path(storage) / re.sub(r"[^A-Za-z0-9_.-]+", "_", report["machine"].get("host") or "machine")
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json")]
    stamp = report["created"].replace(":", "").replace("-", "")[:15]
    path = folder / f"{max(numbers, default=0) + 1:04d}_{report['commit'] or 'nocommit'}_{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def find_run(storage: str | Path, which: str) -> Path:
    """A saved run by path, by number ('3' or '0003'), or 'latest'."""
    if which not in ("latest", "") and Path(which).is_file():
        return Path(which)
    if which.isdigit() and len(which) < 4:
        which = which.zfill(4)
    runs = sorted(Path(storage).glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: (p.name[:4], p.stat().st_mtime))
    if which not in ("latest", ""):
        runs = [p for p in runs if p.name.startswith(which)]
    if not runs:
        raise FileNotFoundError(f"no saved run {which!r} under {storage}: save runs with --repro-autosave, "
                                f"or pass the path of a report.json")
    return runs[-1]


def compare(old: dict, new: dict) -> list[dict]:
    """What changed: verdicts that flipped, statistics that moved outside the other run's interval."""
    index = {_key(r): r for r in old.get("claims", [])}
    changes = []
    for r in new.get("claims", []):
        before = index.get(_key(r))
        if before is None:
            changes.append({"claim": r["claim"], "dataset": _key(r)[1], "kind": "new", "detail": f"verdict {r['verdict']}"})
            continue
        if before["verdict"] != r["verdict"]:
            changes.append({"claim": r["claim"], "dataset": _key(r)[1], "kind": "verdict flipped",
                            "detail": f"{before['verdict']} -> {r['verdict']}"})
        old_checks = {c["statistic"]: c for c in before["checks"]}
        for c in r["checks"]:
            o = old_checks.get(c["statistic"])
            if o is None or any(not isinstance(d.get(k), (int, float)) for d in (o, c) for k in ("value", "low", "high")):
                continue  # an unmeasured statistic has nothing to compare
            if not (o["low"] <= c["value"] <= o["high"]) and not (c["low"] <= o["value"] <= c["high"]):
                changes.append({"claim": r["claim"], "dataset": _key(r)[1], "kind": "statistic moved",
                                "detail": f"{c['statistic']}: {check_interval(o)} -> {check_interval(c)}"})
    seen = {_key(r) for r in new.get("claims", [])}
    for key, r in index.items():
        if key not in seen:
            changes.append({"claim": key[0], "dataset": key[1], "kind": "not run", "detail": f"was {r['verdict']}"})
    return changes


def _key(r: dict) -> tuple[str, str]:
    """A claim instance: claim id and its parameters (dataset, and architecture where parametrised)."""
    return r["claim"], r.get("variant", r["dataset"])


def format_changes(changes: list[dict], against: str) -> list[str]:
    if not changes:
        return [f"no changes against {against}"]
    return [f"changes against {against}:"] + [f"  {c['claim']} [{c['dataset']}] {c['kind']}: {c['detail']}" for c in changes]
