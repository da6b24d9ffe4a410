"""The claims catalogue, generated from expected/: ``advclaims claims [ID]`` and docs/claims.md.

Every claim: its id, paper, source, title, protocol note, the checks that decide it (statistic, relation,
threshold, where the threshold comes from and the range we would also defend), the free parameters of our
protocol, the paper's values, and the known findings per dataset and budget. docs/claims.md is this text;
tests/test_catalogue.py fails when it is out of date (``advclaims claims --markdown > docs/claims.md``).
"""

from __future__ import annotations


from advclaims.verdict import expected as expected_mod


# the rules and settings every claim shares, and the invariants the attacks' property tests guard
COMMON = 'Every statistic comes with an uncertainty: a bootstrap confidence interval over images (and over\nseeds where more than one seed is run). A claim is **reproduced** when the interval lies wholly\non the claimed side, **contradicted** when it lies wholly on the other side, and **inconclusive**\notherwise. All three must be visible in the report; never hide an inconclusive claim.\n\nCommon setting (paper `local_properties`, reused by the others where they fit): ResNet-18\n(CIFAR variant: 3x3 stem, no max-pool), STD = standard training, ADV = PGD adversarial training\n(L-inf, eps 8/255, step 2/255, 10 steps, random start). SGD momentum 0.9, weight decay 5e-4,\nlr 0.1 divided by 10 at 50% and 75% of 100 epochs. Evaluation attack PGD-20 (step 1/255).\nPaper figures: STD clean 94.4%; ADV clean 84.9%; ADV PGD-20 47.5% (last) / 51.9% (best\ncheckpoint); ADV FGSM 57.4%.'

INVARIANTS = "- Every L-inf attack's output lies in the eps-ball around x and in the valid pixel box, for any\n  shape, eps and seed; eps = 0 returns x.\n- FGSM without clipping moves every pixel by exactly ±eps or 0.\n- Stronger is not weaker: on the same model and data, PGD-k accuracy ≤ FGSM accuracy (+ noise\n  margin), and more steps never raise accuracy beyond noise.\n- Seeded attacks are deterministic; a batch gives the same result as its items one by one.\n- Low-pass + high-pass = identity; the filters are linear; Parseval holds.\n- Subspace projection is idempotent and orthogonal; complement + projection = identity.\n- Local response differences of a conv layer are linear in the input difference\n  (conv(x̂) − conv(x) = conv(x̂ − x) for the bias-free conv).\n- DeepFool's output crosses the decision boundary of the model it attacked (for the samples it\n  reports as successful), with overshoot; a misclassified input is reported, not returned as a\n  zero-norm success."


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


def entry(spec: expected_mod.ClaimSpec) -> list[str]:
    """One claim as markdown lines."""
    lines = [f"### {spec.id}: {spec.title}", "", f"- paper: `{spec.paper}`; source: {spec.source}"]
    if spec.statement:
        lines.append(f"- the claim: {spec.statement}")
    if spec.paper_setting:
        s = spec.paper_setting
        lines.append(f"- the paper's setting (where its figures are checked): {s['dataset']} at the "
                     f"{s.get('budget', 'paper')} budget")
    if spec.protocol_note:
        lines.append(f"- protocol: {spec.protocol_note}")
    lines += ["", "| statistic | claimed | threshold from | what |", "|---|---|---|---|"]
    for c in spec.checks:
        where = f"{c.basis}: {c.basis_note}" if c.basis else "–"
        if c.threshold_range:
            where += f" (range {_num(c.threshold_range[0])} to {_num(c.threshold_range[1])})"
        paper = f"; paper {_num(c.paper)}" if c.paper is not None else ""
        lines.append(f"| `{c.statistic}` | {c.comparator} {_num(c.threshold)}{paper} | {_cell(where)} | "
                     f"{_cell(c.description)} |")
    if spec.parameters:
        lines += ["", "Free parameters of our protocol (the verdict is reported across them):", ""]
        lines += [f"- `{p.name}` = {_num(p.default)} (also {', '.join(_num(v) for v in p.values if v != p.default)}): "
                  f"{p.description}. {p.basis_note}" for p in spec.parameters]
    if spec.values:
        lines += ["", "The paper's figures (checked only in its setting):", ""]
        lines += [f"- `{v.statistic}` = {_num(v.paper)} ± {_num(v.tolerance)}: {v.description}" for v in spec.values]
    if spec.expect:
        lines += ["", "Known findings (the verdict expected where it is not reproduced):", ""]
        lines += [f"- {key}: **{e.verdict.value}**"
                  + (f" (also seen: {', '.join(v.value for v in e.also_seen)}; unstable at this setting)"
                     if e.also_seen else "") + (f": {e.reason}" if e.reason else "")
                  for key, e in sorted(spec.expect.items())]
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(directory=None) -> str:
    """docs/claims.md: every claim of every paper of ``directory`` (default: the project's expected/), in id order."""
    specs = expected_mod.load(directory)
    papers = expected_mod.papers(directory)
    lines = ["# The claims catalogue", "",
             "Generated from `expected/` by `advclaims claims --markdown`; do not edit by hand (tests/test_catalogue.py "
             "fails when this file and expected/ disagree). Each claim is one test in `claims/`; its verdict is "
             "reproduced when every deciding statistic's confidence interval lies on the claimed side of its "
             "threshold, contradicted when one lies wholly on the other side, inconclusive otherwise. *Threshold "
             "from* says whether the paper states the threshold or we chose it (and why).", "",
             "## What every claim shares", "", COMMON, "", "Attack invariants (hypothesis property tests in tests/, "
             "run on every commit):", "", INVARIANTS, ""]
    for paper in expected_mod.paper_keys(specs):
        ids = sorted((cid for cid, s in specs.items() if s.paper == paper), key=expected_mod.claim_order)
        if not ids:
            continue
        meta = papers.get(paper, {})
        lines += [f"## {paper}: {meta.get('title', paper)}", ""]
        if meta:
            lines += [f"{meta.get('authors', '')}; {meta.get('venue', '')}.", ""]
            if meta.get("setting"):
                lines += [meta["setting"], ""]
        lines += [f"Claims: {', '.join(ids)}.", ""]
        for cid in ids:
            lines += entry(specs[cid]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def text(cid: str | None = None, directory=None) -> str:
    """``advclaims claims [ID]``: one claim in full, or one line per claim."""
    specs = expected_mod.load(directory)
    if cid is not None:
        if cid not in specs:
            raise KeyError(f"unknown claim id {cid!r}; known: {', '.join(sorted(specs, key=expected_mod.claim_order))}")
        return "\n".join(entry(specs[cid])) + "\n"
    rows = []
    for cid in sorted(specs, key=expected_mod.claim_order):
        s = specs[cid]
        findings = ", ".join(f"{k} {e.verdict.value}" + "".join(f" or {v.value}" for v in e.also_seen)
                             + (" (unstable)" if e.also_seen else "")
                             for k, e in sorted(s.expect.items())) or "none recorded"
        n = len(s.checks)
        rows.append(f"{cid:<6} {s.paper:<17} {s.title}  [{n} check{'s' * (n != 1)}; findings: {findings}]")
    return "\n".join(rows) + "\n"
