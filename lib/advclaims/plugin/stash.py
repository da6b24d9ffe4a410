"""What the plugin keeps in pytest's stash, and the names its records travel under (pytest-xdist carries a
report's user properties from the workers to the controller)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from advclaims.plugin.session import ReproSession

SESSION = pytest.StashKey["ReproSession"]()   # config.stash: the session object
STARTED = pytest.StashKey[float]()             # item.stash: when the instance started
USED_FROM = pytest.StashKey[int]()             # item.stash: the pipeline's models handed out before it
CHECKED = pytest.StashKey[bool]()              # item.stash: the test handed its Measurement to ``check``
DECLARED = pytest.StashKey[frozenset]()        # item.stash: the statistics its analysis declares (@measures)

RECORD = "advclaims-record"      # a claim instance's record (JSON)
SEED_PART = "advclaims-seed"     # one training seed's Measurement of an instance run over several seeds
PREFLIGHT_ROW = "advclaims-preflight"   # a preflight instance's row
COMPILE_COUNTERS = "advclaims-compile"  # an xdist worker's torch.compile counters so far (the report's accel lines)


def session_of(config) -> "ReproSession":
    return config.stash[SESSION]
