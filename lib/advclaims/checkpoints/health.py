"""The model-health gate: no analysis ever runs on a model that did not learn.

After training and on every load (and on import), a model must show, on the evaluation images:

- clean accuracy clearly above chance: a one-sided binomial test against 1/K at p < 1e-3, and at least
  the budget's floor, a fraction of the way from chance to 100% (``Budget.health_floor``, the budget table);
- a loss that fell: the mean training loss over the last tenth of the steps below that over the first
  tenth (epochs alone cannot tell for a one-epoch schedule);
- for adversarially trained models, robust accuracy that is no sign of gradient masking: PGD-20 not
  above FGSM (an exact one-sided test on the images where the two disagree, p < 0.01, and more than a
  point), and PGD-20 with restarts not far below a single PGD-20 (at most ``RESTART_DROP``).

An external model (``--repro-model``, ``advclaims import``) is also held to a reference (``reference_failure``):
its published clean accuracy when one is given, else the clean accuracy of the suite's own model of the same
role and budget on the same images. It is refused when the upper end of its 95% Clopper-Pearson interval lies
more than ``REFERENCE_MARGIN`` below the reference: a wrong pixel range or class order costs far more than
that (a Fashion-MNIST model that expects normalised input, fed [0, 1] pixels, drops from ~79% to ~23%), while
a model of another layout or recipe rarely falls that far short of a smoke-budget ResNet-18.

A failure is one line (``ModelUnhealthy``) naming the model, its accuracies, chance, the recipe and what
to change; every claim instance that needs the model errors with it. The checkpoint stays in the store,
and every later load refuses it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats as sps

from advclaims import budgets as budgets_mod
from advclaims.budgets import Budget
from advclaims.attacks import fgsm, pgd
from advclaims.evaluation import attack_batched, correct

P_ABOVE_CHANCE = 1e-3       # clean accuracy vs chance: one-sided binomial p-value below this
P_MASKING = 0.01            # PGD-20 above FGSM: one-sided exact test on the discordant images
MASKING_MARGIN = 0.01       # ... and by more than this (accuracy, fraction of images)
RESTART_DROP = 0.05         # PGD-20 with restarts at most this far below PGD-20 (accuracy)
EVAL_IMAGES = 1000          # the first evaluation images every checkpoint is measured on
RESTART_IMAGES = 200        # images attacked with restarts
RESTARTS = 3                # random starts besides the first
REFERENCE_MARGIN = 0.15     # an external model's clean accuracy (upper 95% bound) at most this far below its reference


class ModelUnhealthy(RuntimeError):
    """A model failed the health gate; the message is one line naming the model and what to change."""


@dataclass(frozen=True)
class Health:
    healthy: bool
    failures: tuple[str, ...]
    summary: str              # the accuracies and tests in one clause

    def as_dict(self) -> dict:
        return {"healthy": self.healthy, "failures": list(self.failures), "summary": self.summary}


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, adversarial: bool,
            batch_size: int = 500, seed: int = 0, steps: int = 20) -> dict:
    """What the gate reads, measured on (x, y): clean, FGSM and PGD-20 accuracy (step eps/8, random start),
    for adversarially trained models PGD-20 with restarts on the first RESTART_IMAGES images, and the count
    of images where PGD-20 succeeds and FGSM fails and vice versa. ``steps``: PGD's (20; a preflight's budget caps
    it)."""
    g = torch.Generator().manual_seed(seed)
    ok_clean = correct(model, x, y).bool()
    x_pgd = attack_batched(pgd, model, x, y, batch_size=batch_size, eps=eps, alpha=eps / 8, steps=steps,
                           random_start=True, generator=g)
    ok_pgd = correct(model, x_pgd, y).bool()
    out = {"clean_accuracy": ok_clean.float().mean().item(), "pgd20_accuracy": ok_pgd.float().mean().item(),
           "eval_images": len(y), "eval_eps": eps}
    if adversarial:
        ok_fgsm = correct(model, attack_batched(fgsm, model, x, y, batch_size=batch_size, eps=eps), y).bool()
        out["fgsm_accuracy"] = ok_fgsm.float().mean().item()
        out["pgd_only_fooled"] = int((ok_fgsm & ~ok_pgd).sum())    # PGD-20 fools, FGSM does not
        out["fgsm_only_fooled"] = int((~ok_fgsm & ok_pgd).sum())   # FGSM fools, PGD-20 does not
        m = min(RESTART_IMAGES, len(y))
        worst = ok_pgd[:m].clone()
        for r in range(RESTARTS):
            gr = torch.Generator().manual_seed(seed + 1 + r)
            xr = attack_batched(pgd, model, x[:m], y[:m], batch_size=batch_size, eps=eps, alpha=eps / 8, steps=steps,
                                random_start=True, generator=gr)
            worst &= correct(model, xr, y[:m]).bool()
        out["restart_images"] = m
        out["pgd20_single_accuracy_restart_images"] = ok_pgd[:m].float().mean().item()
        out[f"pgd20_restarts{RESTARTS + 1}_accuracy"] = worst.float().mean().item()
    return out


def loss_window(losses: list[float]) -> tuple[float, float]:
    """Mean loss over the first and the last tenth of the steps (at least one step each)."""
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def assess(metrics: dict, *, num_classes: int, budget: Budget | str, adversarial: bool) -> Health:
    """The gate's verdict on measured ``metrics`` (``measure`` and the training metrics) at ``budget``'s floor (a
    Budget, or a budget's name)."""
    budget = budgets_mod.get(budget) if isinstance(budget, str) else budget
    chance = 1.0 / num_classes
    floor = chance + budget.health_floor * (1 - chance)
    budget = budget.name
    n = int(metrics.get("eval_images", 0))
    clean = float(metrics.get("clean_accuracy", float("nan")))
    failures = []
    p = float("nan")
    if n > 0 and clean == clean:
        p = float(sps.binomtest(round(clean * n), n, chance, alternative="greater").pvalue)
        if p >= P_ABOVE_CHANCE:
            failures.append(f"chance probe: clean accuracy {clean:.1%} on {n} images is not above chance {chance:.1%} "
                            f"(binomial p = {p:.2g})")
        if clean < floor:
            failures.append(f"floor probe: clean accuracy {clean:.1%} is below the {budget} floor {floor:.1%}")
    else:
        failures.append("no clean accuracy was measured")
    first, last = metrics.get("loss_first_steps"), metrics.get("loss_last_steps")
    if first is not None and last is not None and not last < first:
        failures.append(f"the training loss did not fall ({first:.3f} over the first tenth of the steps, "
                        f"{last:.3f} over the last)")
    parts = [f"clean {clean:.1%} (chance {chance:.1%}, floor {floor:.1%}, binomial p {p:.2g})"]
    if "pgd20_accuracy" in metrics:
        parts.append(f"PGD-20 {metrics['pgd20_accuracy']:.1%}")
    if adversarial and "fgsm_accuracy" in metrics:
        fgsm_acc, pgd_acc = metrics["fgsm_accuracy"], metrics["pgd20_accuracy"]
        parts.append(f"FGSM {fgsm_acc:.1%}")
        a, b = int(metrics["fgsm_only_fooled"]), int(metrics["pgd_only_fooled"])
        p_mask = float(sps.binomtest(a, a + b, 0.5, alternative="greater").pvalue) if a + b else 1.0
        if pgd_acc - fgsm_acc > MASKING_MARGIN and p_mask < P_MASKING:
            failures.append(f"PGD-20 accuracy {pgd_acc:.1%} is above FGSM's {fgsm_acc:.1%} (p = {p_mask:.2g}): "
                            f"the gradients are masked")
        key = f"pgd20_restarts{RESTARTS + 1}_accuracy"
        if key in metrics:
            single, worst = metrics["pgd20_single_accuracy_restart_images"], metrics[key]
            parts.append(f"PGD-20 x{RESTARTS + 1} restarts {worst:.1%} (single {single:.1%})")
            if single - worst > RESTART_DROP:
                failures.append(f"PGD-20 with {RESTARTS + 1} restarts drops accuracy from {single:.1%} to {worst:.1%} "
                                f"(more than {RESTART_DROP:.0%}): the gradients are masked")
    return Health(not failures, tuple(failures), ", ".join(parts))


def reference_failure(metrics: dict, reference: float, what: str) -> str | None:
    """The reference probe: the failure line when the clean accuracy in ``metrics`` is far below ``reference``
    (its 95% Clopper-Pearson upper bound more than REFERENCE_MARGIN below), else None."""
    n = int(metrics.get("eval_images", 0))
    clean = float(metrics.get("clean_accuracy", float("nan")))
    if n <= 0 or clean != clean:
        return None
    ci = sps.binomtest(round(clean * n), n).proportion_ci(0.95, method="exact")
    if ci.high >= reference - REFERENCE_MARGIN:
        return None
    return (f"reference probe: clean accuracy {clean:.1%} (95% CI {ci.low:.1%} to {ci.high:.1%}, {n} images) is more "
            f"than {REFERENCE_MARGIN * 100:.0f} points below {what} {reference:.1%}")


def with_failure(health: Health, failure: str) -> Health:
    """``health`` with one more failure (the reference probe's)."""
    return Health(False, (*health.failures, failure), health.summary)


def describe_recipe(recipe: dict) -> str:
    r = recipe
    attack = "" if r["method"] == "standard" else f", {r['method']} {r['attack_steps']} steps eps {r['eps']:.4g}"
    return (f"{r['method']} training, {r['epochs']} epochs, batch {r['batch_size']}, lr {r['lr']} ({r['schedule']}), "
            f"weight decay {r['weight_decay']}{attack}")


def refusal(name: str, health: Health, *, recipe: dict | None, path, budget: str) -> str:
    """The one line of a model that failed the gate."""
    what = f"recipe: {describe_recipe(recipe)}" if recipe else "an imported model"
    fix = ("train it longer or with another learning rate (a larger --repro-budget, or the recipe in "
           "advclaims/budgets.py), or fix the architecture" if recipe else
           "check that it takes pixels in [0, 1] and normalises inside its forward (a model trained on normalised "
           "input, fed [0, 1] pixels, fails this way), that its classes are in the dataset's order, that the weights "
           "are the trained ones (not a fresh initialisation) and for this dataset and role; if this accuracy is "
           "really its own, give its published one (advclaims import --published-clean, or --repro-published "
           "ROLE=CLEAN)")
    kept = (f"The checkpoint is kept at {path} and is refused on every load until then." if recipe else
            f"Its source: {path}; nothing of it is used until it passes.")
    return (f"model {name} failed the health gate at the {budget} budget: {'; '.join(health.failures)} "
            f"[{health.summary}; {what}]. Change: {fix}. {kept}")
