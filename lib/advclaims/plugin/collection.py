"""Markers and collection: the claim, dataset, paper, gpu and slow markers, checked (an unknown marker or claim id is
one usage error), ``-k`` by claim id, and training seeds as a parameter: a claim instance whose fixtures depend on
``repro_seed`` is one test item per seed (``[...-seed1]``) when the session runs several."""

from __future__ import annotations

import difflib
import re

import pytest
import torch

from advclaims import budgets as budgets_mod
from advclaims import data as data_mod
from advclaims.plugin.stash import DECLARED, session_of
from advclaims.verdict import durations as durations_mod
from advclaims.verdict import expected as expected_mod
from advclaims.verdict.measurement import declarations, unknown_names


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): the claim of docs/claims.md this test checks (an id in expected/)")
    for name in data_mod.DATASETS:
        config.addinivalue_line("markers", f"{name}: runs on {name}")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: over 30 s on 2 CPU cores (deselect with -m 'not slow')")
    catalogue = session_of(config).catalogue
    for name in sorted(set(expected_mod.PAPERS) | set(expected_mod.paper_keys(catalogue))):
        config.addinivalue_line("markers", f"{name}: a claim of the {name} paper")


def pytest_generate_tests(metafunc):
    """A claim test whose fixtures depend on the training seed runs once per seed of the session (pytest's own
    parametrisation: each seed an item, with its own fixtures; the session pools their Measurements). With one
    seed the item keeps its plain id and ``repro_seed`` gives the budget's first seed."""
    seeds = session_of(metafunc.config).seeds
    if (len(seeds) > 1 and "repro_seed" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("claim") is not None):
        metafunc.parametrize("repro_seed", seeds, ids=[f"seed{s}" for s in seeds])


_MARK_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


_MARK_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")  # pytest's identifier syntax in -m expressions


def marker_names(expression: str) -> set[str]:
    """The marker names an -m expression mentions: its identifiers, less and/or/not and the keyword
    arguments of ``marker(key=value)``."""
    text = _MARK_QUOTED.sub(" ", expression)
    names = set()
    for match in _MARK_IDENT.finditer(text):
        keyword = text[match.end():].lstrip().startswith("=") or text[:match.start()].rstrip().endswith("=")
        if match.group() not in ("and", "or", "not") and not keyword:
            names.add(match.group())
    return names


def check_marker_expression(expression: str | None, known: set[str]) -> None:
    """pytest.UsageError naming an unknown marker of ``expression``, its nearest known one and them all."""
    unknown = sorted(marker_names(expression or "") - known)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise pytest.UsageError(f"-m {expression!r}: unknown marker {unknown[0]!r}{hint}; known markers: "
                            f"{', '.join(sorted(known))}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Check -m once, on the controller, when every plugin and initial conftest has registered its markers."""
    config = session.config
    if not hasattr(config, "workerinput"):
        known = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
        check_marker_expression(config.option.markexpr, known)


def pytest_report_header(config):
    budget = session_of(config).budget
    lines = budget.describe().splitlines()
    if budget.preflight:
        lines.append(f"  preflight: every iteration count above (PGD steps, attacks, Lanczos) capped at "
                     f"{budgets_mod.PREFLIGHT_ITERATIONS} (the preflight budget's sizes); no verdicts")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    catalogue = session_of(config).catalogue
    has_cuda = torch.cuda.is_available()
    problems: list[str] = []
    for item in items:
        marker = item.get_closest_marker("claim")
        if marker is not None:
            if len(marker.args) != 1 or not isinstance(marker.args[0], str):
                raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.claim(\"ID\") with one claim id")
            cid = marker.args[0]
            if cid not in catalogue:
                raise pytest.UsageError(
                    f"{item.nodeid}: unknown claim id {cid!r}; known ids come from expected/*.toml "
                    f"({', '.join(sorted(catalogue)) or 'none'})")
            # `-k LP-8` selects the claim: pytest matches -k against names and these extra keywords
            # (substrings, case-insensitive, as everywhere in -k: `-k LP-1` also selects LP-10..LP-14).
            item.extra_keyword_matches.add(cid)
            # the analysis the test calls, found in its module (which imports it): expected/ held against it now
            found = declarations(vars(item.module), cid) if getattr(item, "module", None) else []
            if found:
                item.stash[DECLARED] = frozenset().union(*(d.statistics for d in found))
                problems += [line for d in found for line in unknown_names(catalogue[cid], d)]
            paper = catalogue[cid].paper
            if not item.get_closest_marker(paper):
                item.add_marker(getattr(pytest.mark, paper))
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none is available here"))
    if problems:
        raise pytest.UsageError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    longest_claims_first(config, items)  # deselection later (-m, -k) keeps this order


def longest_claims_first(config, items) -> None:
    """Claim instances first, longest first by ``claims/durations.json`` (advclaims.verdict.durations), then the tests
    marked slow, then the rest, each in their order: a parallel run does not end on one long item, and the models the
    claims train are in the store before the tests that copy them ask."""
    claims = [item for item in items if item.get_closest_marker("claim") is not None]
    if not claims:
        return
    session = session_of(config)
    seconds = durations_mod.load(config.rootpath / "claims" / durations_mod.FILE, session.budget.name)
    from advclaims.plugin.session import instance_id  # the reports' instance id: the node id without its seed

    ids = [instance_id(item.nodeid, session.seed_of(item)) for item in claims]
    ordered = [claims[k] for k in durations_mod.longest_first(ids, seconds)]
    others = [item for item in items if item.get_closest_marker("claim") is None]
    slow = [item for item in others if item.get_closest_marker("slow") is not None]
    items[:] = ordered + slow + [item for item in others if item.get_closest_marker("slow") is None]

