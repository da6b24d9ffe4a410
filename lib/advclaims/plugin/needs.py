"""``advclaims models``: every trained model a pytest selection needs, so that a nightly can train them all in
parallel first (one model per GPU; DDP only for the largest) instead of one worker training them inside a test.

The selection is collected (``pytest --collect-only`` in this process, with the arguments given); each collected
claim instance names its models through its fixtures: ``std_model``/``adv_model`` (ResNet-18), ``curvature_model``
(the curvature claims' architecture for the dataset), ``ib_model`` (the parametrised architecture) and
``weight_decay_sweep`` (LP-13's ADV models, one per weight decay). Every budget seed is listed (each seed is an item
of its own). Each model appears once, with the ``advclaims train`` line that puts it in the store.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass

import pytest

from advclaims.budgets import REGULAR_WEIGHT_DECAY, WEIGHT_DECAY_SWEEP
from advclaims.plugin.stash import session_of



@dataclass(frozen=True, order=True)
class Need:
    """One trained model a selection needs: what ``Pipeline.model`` is asked for."""

    dataset: str
    role: str
    arch: str
    seed: int
    weight_decay: float = REGULAR_WEIGHT_DECAY
    via: str = ""          # the fixture that asks for it
    trainable: bool = True  # False: trained inside the test only (the smoke budget's reduced LP-13 sweep)

    def command(self, budget: str) -> str:
        wd = "" if self.weight_decay == REGULAR_WEIGHT_DECAY else f" --weight-decay {self.weight_decay:g}"
        return (f"advclaims train --role {self.role} --dataset {self.dataset} --arch {self.arch} --budget {budget} "
                f"--seed {self.seed}{wd}")

    def as_dict(self) -> dict:
        return asdict(self)


def _requests(item) -> list[tuple[str, str, float, str, bool]]:
    """(role, arch, weight decay, fixture, trainable) of every model ``item``'s fixtures ask for."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    names = set(getattr(item, "fixturenames", ()))
    dataset = params.get("dataset")
    budget = session_of(item.config).budget
    out = []
    if "std_model" in names:
        out.append(("std", "resnet18", REGULAR_WEIGHT_DECAY, "std_model", True))
    if "adv_model" in names:
        out.append(("adv", "resnet18", REGULAR_WEIGHT_DECAY, "adv_model", True))
    if "curvature_model" in names:
        from fixtures.curvature import ARCHITECTURES  # the rootdir's fixtures package, on the path in a session

        arch = params.get("curvature_arch") or ARCHITECTURES.get(dataset, ("?",))[0]
        out.append(("std", arch, REGULAR_WEIGHT_DECAY, "curvature_model", True))
    if "ib_model" in names and params.get("ib_model"):
        out.append(("adv", params["ib_model"], REGULAR_WEIGHT_DECAY, "ib_model", True))
    if "weight_decay_sweep" in names:
        reduced = budget.sweep_train_images is not None  # trained inside the test on a subset of its own
        out += [("adv", "resnet18", wd, "weight_decay_sweep", not reduced) for wd in WEIGHT_DECAY_SWEEP]
    return [(role, arch, wd, via, ok) for role, arch, wd, via, ok in out if dataset]


class _Collector:
    def __init__(self):
        self.needs: set[Need] = set()
        self.budget = None
        self.errors = 0

    def pytest_collectreport(self, report):
        if report.failed:
            self.errors += 1

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        session = session_of(config)
        self.budget = session.budget.name
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            seed = params.get("repro_seed", session.seeds[0])  # several seeds: one item per seed
            for role, arch, wd, via, ok in _requests(item):
                self.needs.add(Need(params.get("dataset"), role, arch, seed, wd, via, ok))


def needed(pytest_args: list[str]) -> tuple[list[Need], str]:
    """The models the selection ``pytest_args`` (e.g. ["claims", "-m", "cifar10", "--repro-budget", "paper"])
    needs, deduplicated and sorted, and its budget. ValueError (one line) when the selection does not collect."""
    collector = _Collector()
    log = io.StringIO()  # pytest's collection listing is not this command's output
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = pytest.main([*pytest_args, "--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[collector])
    if collector.errors or code not in (0, 5) or collector.budget is None:
        last = next((line for line in reversed(log.getvalue().splitlines()) if line.strip()), "")
        raise ValueError(f"the selection {' '.join(pytest_args)!r} did not collect (pytest exit {int(code)}: "
                         f"{last[:200]}); run it with pytest --collect-only to see why")
    merged: dict[tuple, Need] = {}
    for need in sorted(collector.needs):  # one line per model; the first fixture that asks for it names it
        merged.setdefault((need.dataset, need.role, need.arch, need.seed, need.weight_decay, need.trainable), need)
    return sorted(merged.values()), collector.budget
