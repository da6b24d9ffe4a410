"""Checkpoint store: one file per canonical spec, trained once however many processes ask.

Key = hash of the canonical JSON spec (``advclaims.checkpoints.keys``: inputs, the kind's version, the settings
that change numbers).
Beside every ``<key>.pt`` lies ``<key>.json``: the provenance (spec, metrics, versions, device,
commit, wall time, checksum). Writers hold a per-key file lock (an OS lock: a killed process
releases it), write to a temporary file and rename, so readers never see a partial file.
Loading uses ``weights_only=True``: a checkpoint can hold tensors and plain data, never code.

Crash safety (docs/reliability.md): a writer killed at any moment leaves either no ``<key>.pt``
or a complete one; its temporary files are swept by the next holder of the key's lock; a
``<key>.pt`` without matching provenance is moved aside and rebuilt. A long ``make`` can keep a
resumable state in ``resume_path(kind, spec)``, which is deleted once the entry is stored.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from advclaims.checkpoints import provenance
from advclaims.checkpoints.keys import canonical, file_sha256, key_of
from advclaims.checkpoints.atomic import atomic_write, sweep


def default_root() -> Path:
    env = os.environ.get("ADVCLAIMS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "advclaims" / "store"


@dataclass
class Entry:
    payload: dict
    provenance: dict
    made: bool          # True when this call built it, False when it was loaded
    path: Path


class Store:
    """A folder of checkpoints and cached tensors, keyed by spec."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.made: list[str] = []
        self.loaded: list[str] = []

    def paths(self, kind: str, spec: dict) -> tuple[Path, Path, Path]:
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        key = key_of(spec)
        return folder / f"{key}.pt", folder / f"{key}.json", folder / f"{key}.lock"

    def resume_path(self, kind: str, spec: dict) -> Path:
        """Where ``make`` may keep a resumable state for ``spec``; removed once the entry is stored."""
        return self.paths(kind, spec)[0].with_suffix(".resume.pt")

    def fetch(self, kind: str, spec: dict, make: Callable[[], tuple[dict, dict]], *,
              map_location="cpu", device="cpu", replace: bool = False) -> Entry:
        """Load the entry for ``spec``, or build it with ``make() -> (payload, metrics)`` and keep it; ``replace``:
        build it even when one is stored (the old one goes, under the key's lock)."""
        pt, meta, lock = self.paths(kind, spec)
        with FileLock(str(lock)):
            if replace:
                pt.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
            for path in (pt, meta, self.resume_path(kind, spec)):
                sweep(path)  # temporary files of a writer that was killed: we hold the lock, it is gone
            entry = self._load(pt, meta, spec, map_location)
            if entry is not None:
                self.loaded.append(pt.stem)
                return entry
            start = time.perf_counter()
            payload, metrics = make()
            wall = time.perf_counter() - start
            atomic_write(pt, lambda tmp: torch.save(payload, tmp))
            record = {
                "kind": kind,
                "key": pt.stem,
                "spec": spec,
                "metrics": metrics,
                "sha256": file_sha256(pt),
                "wall_seconds": round(wall, 3),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "commit": provenance.commit(),
                "machine": provenance.machine(device),
            }
            atomic_write(meta, lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str)))
            self.resume_path(kind, spec).unlink(missing_ok=True)
            self.made.append(pt.stem)
            return Entry(payload, record, True, pt)

    def _load(self, pt: Path, meta: Path, spec: dict, map_location) -> Entry | None:
        if not pt.exists():
            return None
        problem = None
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError) as err:
            record, problem = None, f"its provenance {meta.name} is missing or unreadable ({err})"
        if record is not None:
            if canonical(record.get("spec")) != canonical(spec):
                problem = "its provenance records a different spec than its key"
            elif record.get("sha256") != file_sha256(pt):
                problem = "its checksum does not match its provenance (truncated or corrupted file)"
        if problem is None:
            try:
                payload = torch.load(pt, map_location=map_location, weights_only=True)
            except Exception as err:  # any unpickling failure means the file cannot be trusted
                first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                problem = f"it does not load ({type(err).__name__}: {first[:200]})"
        if problem is not None:
            aside = pt.with_name(f"{pt.stem}.corrupt-{int(time.time())}.pt")
            os.replace(pt, aside)
            warnings.warn(f"checkpoint {pt} was moved aside to {aside.name} and will be rebuilt: {problem}")
            return None
        return Entry(payload, record, False, pt)
