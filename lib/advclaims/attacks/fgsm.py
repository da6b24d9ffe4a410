"""FGSM: Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial Examples", ICLR.

Threat model: L-inf, radius ``eps`` in pixel units of [0, 1]; white box (input gradient); one step.
Untargeted: x + eps * sign(grad_x CE(f(x), y)). Targeted (``targeted=True``, y is the target):
x - eps * sign(grad_x CE(f(x), y)), a step toward the target class.

Shapes: x float (N, C, H, W) in [0, 1]; y int64 (N,); returns a new detached (N, C, H, W) tensor.
``clip=True`` (default) clamps the result to [0, 1]; ``clip=False`` returns x + eps * sign(grad)
unclamped, so every pixel moves by exactly +eps, -eps or 0 (sign(0) = 0).
The model runs in eval mode with frozen parameters and is restored afterwards; the gradient comes
from ``fast_model`` (the model's logits up to float rounding, see pgd).
"""

from __future__ import annotations

import torch
from torch import nn

from advclaims.attacks._common import check_attack_inputs, check_eps, cross_entropy_loss, frozen, input_gradient
from advclaims.attacks.fastpath import fast_model


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, targeted: bool = False,
         clip: bool = True) -> torch.Tensor:
    eps = check_eps(eps)
    with frozen(model):
        check_attack_inputs(model, x, y)
        grad = input_gradient(fast_model(model, x), x, y, cross_entropy_loss)
    direction = -1.0 if targeted else 1.0  # targeted descends the loss toward y
    x_adv = x.detach() + direction * eps * grad.sign()
    return x_adv.clamp(0.0, 1.0) if clip else x_adv
