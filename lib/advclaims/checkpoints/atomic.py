"""Atomic file replacement: a reader sees the old file or the new one, never a partial write.

The new content goes to a temporary file in the same folder, is flushed to disk, and is renamed
over the target (``os.replace`` is atomic on POSIX). A writer killed mid-write leaves only its
temporary file, named ``<target>.<random>.tmp``, which ``sweep`` removes under the target's lock.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then move it to ``path`` in one step."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sweep(path: Path) -> list[Path]:
    """Remove the temporary files a killed writer of ``path`` left behind; returns what it removed.
    Call it only while holding the lock that all writers of ``path`` take."""
    path = Path(path)
    left = sorted(path.parent.glob(f"{path.name}.*.tmp"))
    for tmp in left:
        tmp.unlink(missing_ok=True)
    return left
