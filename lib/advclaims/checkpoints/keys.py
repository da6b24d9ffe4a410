"""Store keys: the one way an entry of the store is named. A spec holds what determines the entry (its inputs),
the version of its kind (bump one when what the code makes of the same inputs changes: stored entries rebuild),
and the run's settings that change numbers (precision and the accelerator's keyed settings). Its key is the hash
of its canonical JSON. ``Pipeline.spec_of`` / ``Pipeline.cached`` build every spec through ``spec``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VERSIONS = {  # kind (the store's folder) -> version of what the code makes of a spec
    "models": 3,               # the training loop (recipes: advclaims.budgets)
    "adversarial": 2,          # the evaluation attacks' parameters and the images they run on
    "targeted": 1,             # HF-2..4's targeted PGD-20 set and its target rule
    "ib_masks": 1,             # the information bottleneck's channel masks
    "ib_adversarial": 1,       # the information-bottleneck suite's attacks
    "curvature": 3,            # Algorithm 1: the operator, its sampling and decomposition
    "curvature_scores": 3,     # what ScoreCurves keeps
    "curvature_deepfool": 3,   # the curvature claims' DeepFool sets
    "curvature_svd": 3,        # the DeepFool SVD bases
    "imported": 1,             # a model imported by `advclaims import` (its weights, under its name)
    "external": 3,             # a user's model: its identity (content) and its measured accuracies
}

PHASES = {  # kind -> the phase of an instance's profile (advclaims.timing) that making an entry of it counts as
    "models": "training", "adversarial": "attacks", "targeted": "attacks", "ib_adversarial": "attacks",
    "curvature_deepfool": "attacks", "external": "attacks", "ib_masks": "analysis", "curvature": "analysis",
    "curvature_scores": "analysis", "curvature_svd": "analysis", "imported": "store",
}
if set(PHASES) != set(VERSIONS):
    raise ImportError(f"keys.PHASES and keys.VERSIONS name other kinds: {sorted(set(PHASES) ^ set(VERSIONS))}")


def canonical(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def key_of(spec: dict) -> str:
    return hashlib.sha256(canonical(spec).encode()).hexdigest()[:20]


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (a checkpoint in the store, a user's weights file, an entry point's module)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def spec(kind: str, fields: dict, settings: dict) -> dict:
    """The spec of an entry of ``kind``: ``fields`` (its inputs), the kind's version and ``settings`` (the run's
    settings that change numbers: precision and the accelerator's keyed fields)."""
    if kind not in VERSIONS:
        raise KeyError(f"unknown store kind {kind!r}: add it to advclaims.checkpoints.keys.VERSIONS")
    clash = set(fields) & ({"version"} | set(settings))
    if clash:
        raise ValueError(f"a {kind} spec sets {sorted(clash)} itself: the key builder adds them")
    return {**fields, "version": VERSIONS[kind], **settings}
