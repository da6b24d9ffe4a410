"""BIM (basic iterative method, I-FGSM): Kurakin, Goodfellow & Bengio (2017), "Adversarial
examples in the physical world", ICLR workshop.

Threat model: L-inf, radius ``eps`` in pixel units of [0, 1]; white box. FGSM repeated ``steps``
times with step ``alpha``, clipping to the eps-ball and [0, 1] after each step, starting at x:
PGD without random start. The paper's schedule: alpha = 1/255, steps = min(255 * eps + 4,
1.25 * 255 * eps); here every budget is explicit.

Shapes: x float (N, C, H, W) in [0, 1]; y int64 (N,) (the target when ``targeted=True``);
returns a new detached (N, C, H, W) tensor. Deterministic. The model runs in eval mode with frozen
parameters and is restored afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from advclaims.attacks.pgd import pgd


def bim(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        targeted: bool = False) -> torch.Tensor:
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False, targeted=targeted)
