"""What the pipeline hands an analysis: a dataset at a budget, a trained (or imported) model, an adversarial set.

Plain data types, no orchestration: an analysis imports these, never the pipeline that makes them (training,
the store, distributed code stay out of an analysis's imports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from advclaims import data as data_mod

if TYPE_CHECKING:
    from advclaims.budgets import Budget
    from advclaims.checkpoints.health import Health


class DatasetBundle:
    """A dataset at a budget: its training subset (read on first use: a warm run never needs it)
    and its evaluation images (the test split's canonical-order prefix)."""

    def __init__(self, info: data_mod.DatasetInfo, load_train, test: data_mod.Split):
        self.info = info
        self.test = test
        self._load_train = load_train
        self._train: data_mod.Split | None = None

    @property
    def train(self) -> data_mod.Split:
        if self._train is None:
            self._train = self._load_train()
        return self._train


@dataclass
class TrainedModel:
    label: str                  # how reports name it, e.g. "STD" or "ADV"
    module: torch.nn.Module
    spec: dict
    key: str
    metrics: dict
    trained_now: bool
    health: "Health | None" = None   # the health gate's verdict (None: not assessed)
    source: dict | None = None                # an external model's provenance (None: trained by the suite)

    def summary(self) -> dict:
        """What the report's model table shows of this model."""
        m = self.metrics
        return {"key": self.key, "label": self.label, "arch": self.spec.get("arch"), "width": self.spec.get("width"),
                "dataset": self.spec.get("dataset"), "role": self.spec.get("role"), "seed": self.spec.get("seed"),
                "source": self.source or {"kind": "trained", "budget": self.spec.get("budget")},
                "clean_accuracy": m.get("clean_accuracy"), "pgd20_accuracy": m.get("pgd20_accuracy"),
                "fgsm_accuracy": m.get("fgsm_accuracy"), "eval_images": m.get("eval_images"),
                "healthy": None if self.health is None else self.health.healthy}


@dataclass
class AdversarialSet:
    attack: str
    params: dict
    source: str                 # label of the model the attack ran on
    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    spec: dict = field(default_factory=dict)


def attack_params(name: str, eps: float, budget: "Budget | None" = None) -> dict:
    """Evaluation attacks of docs/claims.md's common setting, scaled to the dataset's eps (a preflight's budget
    caps PGD's steps)."""
    if name == "pgd20":
        steps = budget.iterations(20) if budget is not None else 20
        return {"eps": eps, "alpha": eps / 8, "steps": steps, "random_start": True}  # step 1/255 at eps 8/255
    if name == "fgsm":
        return {"eps": eps}
    raise ValueError(f"unknown evaluation attack {name!r}: use pgd20 or fgsm")
