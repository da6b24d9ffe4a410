"""C&W L2: Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural Networks",
IEEE Symposium on Security and Privacy.

Threat model: L2, minimal perturbation (no fixed radius); white box. Change of variables
x' = (tanh(w) + 1) / 2 keeps x' in [0, 1]; Adam (learning rate ``lr``) minimises, for ``steps``
iterations, ||x' - x||_2^2 + c * f(x') with the margin loss on logits z
    untargeted: f = max(z_y - max_{i != y} z_i, -kappa)
    targeted:   f = max(max_{i != y} z_i - z_y, -kappa)   (y is the target label)
An iterate is successful when its margin exceeds kappa (so at kappa=0: misclassified, or
classified as the target). Per image, the successful iterate with the smallest L2 distance is
returned; an image with no successful iterate is returned unchanged (x itself).

This is one constant ``c`` (default 0.1), without the paper's binary search over c; defaults
kappa=0, steps=100, lr=0.01 follow common re-implementations (torchattacks uses c=1, lr=0.01).

Shapes: x float (N, C, H, W) in [0, 1]; y int64 (N,); returns a new detached (N, C, H, W) tensor.
Vectorised: the whole batch is one Adam problem whose terms are independent per image.
The model runs in eval mode with frozen parameters and is restored afterwards; its logits come from
``fast_model`` (the model's, up to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from advclaims.attacks._common import (check_attack_inputs, check_finite_logits, check_nonnegative, check_positive,
                                       check_steps, frozen, margin_loss)
from advclaims.attacks.fastpath import fast_model

TANH_EDGE = 1 - 1e-6  # atanh(±1) is infinite: pull pixels at 0 or 1 just inside


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, c: float = 0.1, kappa: float = 0.0,
          steps: int = 100, lr: float = 0.01, targeted: bool = False) -> torch.Tensor:
    c = check_nonnegative(c, "c", "pass the weight of the misclassification term, e.g. 0.1 to 10")
    kappa = check_nonnegative(kappa, "kappa", "pass the required logit margin, 0 for minimal perturbations")
    lr = check_positive(lr, "lr", "pass Adam's learning rate, e.g. 0.01")
    steps = check_steps(steps)
    with frozen(model):
        check_attack_inputs(model, x, y)
        x = x.detach()
        forward = fast_model(model, x)
        w = torch.atanh((2 * x - 1).clamp(-TANH_EDGE, TANH_EDGE)).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=lr)
        best = x.clone()
        best_dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        for step in range(steps + 1):
            x_new = (torch.tanh(w) + 1) / 2
            logits = check_finite_logits(forward(x_new))
            # margin > 0 means misclassified (untargeted) or short of the target (targeted)
            margin = margin_loss(logits, y)
            margin = -margin if targeted else margin
            dist = (x_new - x).flatten(1).pow(2).sum(1)
            improved = (margin > kappa) & (dist < best_dist)
            best = torch.where(improved[:, None, None, None], x_new.detach(), best)
            best_dist = torch.where(improved, dist.detach(), best_dist)
            if step == steps:
                break
            loss = dist.sum() + c * (-margin).clamp(min=-kappa).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return best.detach()
