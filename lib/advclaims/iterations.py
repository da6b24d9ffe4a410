"""Iteration counts, capped during a preflight (``--repro-preflight``): every loop runs, but only a few times.

Attacks, mask fitting and the block Lanczos growth ask ``cap(n)`` for their number of iterations; training
epochs are cut by the preflight budget itself. A preflight uses a store of its own, so nothing computed
with capped iterations is ever taken for a full computation.
"""

from __future__ import annotations

PREFLIGHT_ITERATIONS = 2   # the least that runs a loop's first step and a step after it

_cap: int | None = None


def set_cap(n: int | None) -> None:
    """Cap every iteration count at ``n`` (None: no cap) for this process."""
    global _cap
    _cap = n


def cap(n: int) -> int:
    return n if _cap is None else min(n, _cap)


def capped() -> bool:
    return _cap is not None
