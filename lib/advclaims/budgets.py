"""Budgets: how big a run is. The claim is the same at every budget; only scale changes.

- smoke: narrow nets, training subsets, short schedules: minutes on 2 CPU cores for every claim.
- fast: the papers' architectures, full data, ~15-epoch schedules (FGSM-RS for ADV): minutes on one GPU.
- paper: the papers' own architectures, schedules and sample sizes (docs/claims.md, common setting).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .models import DEFAULT_WIDTH
from .training import Recipe, paper_recipe

NAMES = ("smoke", "fast", "paper")
PREFLIGHT_TRAIN = 256   # training images in a preflight: two batches of the recipes' 128
PREFLIGHT_TEST = 100    # evaluation images in a preflight: enough for groups of successful and failed attacks

# smoke widths: the first stage's channels (ResNet: 8 instead of 64), chosen for 2-core CPUs
_SMOKE_WIDTH = {"resnet18": 8, "preact_resnet18": 8, "vgg16_bn": 8, "wrn28_10": 1, "nin": 32, "lenet": 8}


@dataclass(frozen=True)
class Budget:
    name: str
    train_subset: int | None          # training images (None: the whole training split)
    test_n: int | None                # test images each claim measures on (None: the whole test split)
    widths: dict = field(default_factory=dict)
    eval_batch: int = 500             # images per attack batch
    seeds: tuple[int, ...] = (0,)     # training seeds (--repro-seeds); statistics pool over them
    scope: str = "models"             # the scope that decides a verdict: "models" or "recipe" (expected/README.md)
    preflight: bool = False           # --repro-preflight: this budget's shapes, schedules and samples cut

    def for_preflight(self) -> "Budget":
        """The same architectures, widths, batch sizes and analysis sizes, with the least data and schedule
        that lets every step run: one epoch over two training batches, PREFLIGHT_TEST evaluation images,
        every iteration count capped (advclaims.iterations). It gives no verdicts."""
        # fast/paper: at least one full attack batch (eval_batch images), since an attack's peak memory is a full
        # batch's (a GPU run's out-of-memory shows here, not hours in); smoke (CPU-sized) keeps PREFLIGHT_TEST
        test_n = PREFLIGHT_TEST if self.name == "smoke" else max(PREFLIGHT_TEST, self.eval_batch)
        return dataclasses.replace(self, train_subset=PREFLIGHT_TRAIN, test_n=test_n, seeds=self.seeds[:1],
                                   preflight=True)

    def describe(self, eps_name: str = "eps") -> str:
        """One line per model role, for the session header (what --collect-only runs would train)."""
        lines = [f"budget {self.name}{' (preflight: no verdicts)' if self.preflight else ''}: training images {self.train_subset or 'all'}, "
                 f"evaluation images {self.test_n or 'all'}, ResNet-18 width {self.width('resnet18')}"]
        for role in ("std", "adv"):
            r = self.recipe(role, 1.0)
            attack = "" if r.method == "standard" else f", {r.method} steps {r.attack_steps} step {r.alpha:g}*{eps_name}"
            lines.append(f"  {role.upper()}: {r.method} training, {r.epochs} epoch{'s' * (r.epochs != 1)}, batch {r.batch_size}, "
                         f"lr {r.lr} ({r.schedule}), momentum {r.momentum}, weight decay {r.weight_decay}{attack}")
        lines.append(f"  evaluation: PGD-20 step {eps_name}/8 with random start, FGSM step {eps_name}")
        return "\n".join(lines)

    def deciding_scope(self, n_seeds: int, *, external: bool = False) -> tuple[str, str | None]:
        """The scope that decides a verdict at this budget with ``n_seeds`` seeds, and why it is not this budget's
        own scope when it is not: the recipe scope needs at least 2 training seeds, and a user's (external)
        model is one fixed model, so its verdicts are always about "these models"."""
        if self.scope == "recipe" and external:
            return "models", "an external model is one fixed model: decided on these models"
        if self.scope == "recipe" and n_seeds < 2:
            return "models", (f"{n_seeds} training seed: the recipe scope needs at least 2 (--repro-seeds), so this "
                              f"verdict is decided on these models")
        return self.scope, None

    def width(self, arch: str) -> int:
        """The first stage's channels of ``arch`` at this budget; an unknown arch names the known ones."""
        if not isinstance(arch, str) or arch not in DEFAULT_WIDTH:
            raise ValueError(f"unknown model {arch!r}; known models: {', '.join(sorted(DEFAULT_WIDTH))}")
        return self.widths.get(arch, DEFAULT_WIDTH[arch])

    def recipe(self, role: str, eps: float, *, weight_decay: float = 5e-4) -> Recipe:
        """The training recipe of a model role ("std" or "adv") at this budget, for threat radius eps."""
        if role not in ("std", "adv"):
            raise ValueError(f"unknown model role {role!r}: use std or adv")
        if self.name == "paper":
            r = paper_recipe("standard" if role == "std" else "pgd", eps)
        elif self.name == "fast":
            r = (Recipe("standard", epochs=15, batch_size=256, lr=0.2, schedule="triangle") if role == "std" else
                 Recipe("fgsm_rs", epochs=15, batch_size=256, lr=0.2, schedule="triangle", eps=eps,
                        alpha=1.25 * eps, attack_steps=1))
        else:
            # smoke ADV: PGD-2 rather than FGSM-RS, which can overfit catastrophically (gradient masking)
            r = (Recipe("standard", epochs=4, batch_size=128, lr=0.1, schedule="triangle") if role == "std" else
                 Recipe("pgd", epochs=4, batch_size=128, lr=0.1, schedule="triangle", eps=eps,
                        alpha=eps / 2, attack_steps=2))
        if weight_decay != r.weight_decay:
            r = Recipe(**{**r.as_dict(), "weight_decay": weight_decay})
        if self.preflight:
            r = Recipe(**{**r.as_dict(), "epochs": 1})
        return r


BUDGETS = {
    "smoke": Budget("smoke", train_subset=6000, test_n=500, widths=_SMOKE_WIDTH, eval_batch=500, seeds=(0,)),
    "fast": Budget("fast", train_subset=None, test_n=None, eval_batch=1000, seeds=(0, 1, 2), scope="recipe"),
    "paper": Budget("paper", train_subset=None, test_n=None, eval_batch=1000, seeds=(0, 1, 2, 3, 4),
                    scope="recipe"),
}


def get(name: str) -> Budget:
    """The named budget; anything else is one error naming the three budgets."""
    if not isinstance(name, str) or name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}: use one of {', '.join(NAMES)}")
    return BUDGETS[name]
