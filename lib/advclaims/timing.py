"""Where an instance's time goes: its wall seconds split into training, attacks, store, analysis and bootstrap.

Each process (an xdist worker runs one instance at a time) keeps one account. Code marks a stretch of work with
``with phase("attacks"):``; nested phases take their own time out of the enclosing one, so the parts add up to the
time spent inside phases. Everything an instance does outside a marked phase is its analysis: the plugin reads
``snapshot()`` when the instance hands over its measurement and puts the remainder of its wall time there.
Training is indivisible: the PGD of adversarial training, and the evaluation it runs, stay training.

Plain Python, no torch: the verdict layer's bootstrap marks its own phase.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager

PHASES = ("training", "attacks", "store", "analysis", "bootstrap")
_ABSORBING = frozenset({"training"})  # phases whose nested phases count as their own


class Account:
    """Seconds per phase (exclusive: a nested phase's time is not its parent's) and counters."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._stack: list[list] = []  # [phase, started]

    def reset(self) -> None:
        self.seconds, self.counts = {}, {}
        # a phase open across the reset keeps running from now
        now = time.perf_counter()
        for frame in self._stack:
            frame[1] = now

    def enter(self, name: str) -> bool:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}: use one of {', '.join(PHASES)}")
        if self._stack and self._stack[-1][0] in _ABSORBING:
            return False
        now = time.perf_counter()
        if self._stack:
            top = self._stack[-1]
            self.seconds[top[0]] = self.seconds.get(top[0], 0.0) + now - top[1]
        self._stack.append([name, now])
        return True

    def leave(self) -> None:
        now = time.perf_counter()
        name, started = self._stack.pop()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - started
        if self._stack:
            self._stack[-1][1] = now

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def snapshot(self) -> dict:
        """Seconds per phase so far (open phases included up to now) and the counters."""
        seconds = dict(self.seconds)
        if self._stack:
            top = self._stack[-1]
            seconds[top[0]] = seconds.get(top[0], 0.0) + time.perf_counter() - top[1]
        return {"seconds": seconds, "counts": dict(self.counts)}


ACCOUNT = Account()


@contextmanager
def phase(name: str):
    """Count the time inside as ``name`` (one of PHASES) in this process's account."""
    entered = ACCOUNT.enter(name)
    try:
        yield
    finally:
        if entered:
            ACCOUNT.leave()


def timed(name: str):
    """A decorator: every call of the function counts as phase ``name``."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)
        return inner
    return wrap


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to a counter of this process's account (bootstrap resamples, say)."""
    ACCOUNT.count(name, n)


def reset() -> None:
    ACCOUNT.reset()


def profile(wall_seconds: float) -> dict:
    """The instance's profile: seconds per phase rounded to 0.01 s, the rest of ``wall_seconds`` as analysis, and
    the counters. Read at the end of an instance, after ``reset()`` at its start."""
    snap = ACCOUNT.snapshot()
    seconds = {p: snap["seconds"].get(p, 0.0) for p in PHASES}
    marked = sum(seconds.values())
    seconds["analysis"] += max(0.0, wall_seconds - marked)
    return {**{p: round(s, 2) for p, s in seconds.items()}, "counts": snap["counts"]}


def add(profiles: list[dict]) -> dict:
    """The sum of several profiles (an instance's seeds)."""
    out = {p: round(sum(q.get(p, 0.0) for q in profiles), 2) for p in PHASES}
    counts: dict[str, int] = {}
    for q in profiles:
        for k, v in q.get("counts", {}).items():
            counts[k] = counts.get(k, 0) + v
    return {**out, "counts": counts}
