"""Universal adversarial perturbations: Moosavi-Dezfooli, Fawzi, Fawzi & Frossard (2017),
"Universal adversarial perturbations", CVPR.

Threat model: one image-agnostic perturbation v of shape (1, C, H, W) with ||v||_p <= eps
(``norm="linf"`` or ``"l2"``, pixel units of [0, 1]), added to every image and clamped to [0, 1];
white box. An image is fooled when the prediction on clamp(x + v) differs from the one on x.
The search stops once the fooling rate reaches 1 - ``delta`` or after ``max_passes`` passes.

Batched approximation of the paper's Algorithm 1: the paper visits the images one at a time,
running DeepFool on each unfooled x_i + v and updating v <- Proj(v + dr_i) immediately. Here each
pass runs one batched DeepFool (``deepfool_steps`` iterations, ``overshoot``) on all unfooled
images at the pass's v, adds the sum of the minimal perturbations dr_i of the images DeepFool
fooled to v, and projects once onto the eps-ball. The images of a pass thus see the pass-start v
rather than every earlier update; more passes make up for it. (On a small Fashion-MNIST LeNet the
fooling rates matched or beat those of adding and projecting the dr_i one at a time.)

Defaults: delta=0.2 (the paper's 80% target), max_passes=5, deepfool_steps=10, overshoot=0.02.
Shapes: x float (N, C, H, W) in [0, 1]; returns v float (1, C, H, W), new and detached.
The model runs in eval mode with frozen parameters and is restored afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from advclaims.attacks._common import (check_eps, check_finite_logits, check_images, check_nonnegative, check_steps,
                                       frozen)
from advclaims.attacks.deepfool import deepfool

NORMS = ("linf", "l2")


def universal_perturbation(model: nn.Module, x: torch.Tensor, *, eps: float, delta: float = 0.2, max_passes: int = 5,
                           norm: str = "linf", deepfool_steps: int = 10, overshoot: float = 0.02) -> torch.Tensor:
    eps = check_eps(eps)
    if not (isinstance(delta, (int, float)) and 0 <= delta < 1):
        raise ValueError(f"delta must be in [0, 1) (got {delta!r}); the target fooling rate is 1 - delta, "
                         "e.g. delta=0.2 for 80%")
    max_passes = check_steps(max_passes, "max_passes")
    deepfool_steps = check_steps(deepfool_steps, "deepfool_steps")
    overshoot = check_nonnegative(overshoot, "overshoot", "pass the paper's 0.02")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    check_images(x)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image; a universal perturbation is fitted to a batch of images")
    x = x.detach()
    v = torch.zeros_like(x[:1])
    with frozen(model):
        with torch.no_grad():
            clean_pred = check_finite_logits(model(x)).argmax(1)
        for _ in range(max_passes):
            fooled = _predict(model, (x + v).clamp(0, 1)) != clean_pred
            if fooled.float().mean() >= 1 - delta:
                break
            start = (x[~fooled] + v).clamp(0, 1)
            result = deepfool(model, start, overshoot=overshoot, max_iter=deepfool_steps)
            minimal_steps = (result.x_adv - start)[result.success]
            v = _project(v + minimal_steps.sum(0, keepdim=True), eps, norm)
    return v.detach()


def fooling_rate(model: nn.Module, x: torch.Tensor, v: torch.Tensor) -> float:
    """Fraction of images whose prediction on clamp(x + v, 0, 1) differs from that on x."""
    with frozen(model):
        return float((_predict(model, (x + v).clamp(0, 1)) != _predict(model, x)).float().mean())


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return check_finite_logits(model(x)).argmax(1)


def _project(v: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return v.clamp(-eps, eps)
    return v * (eps / v.norm().clamp_min(1e-12)).clamp(max=1.0)
