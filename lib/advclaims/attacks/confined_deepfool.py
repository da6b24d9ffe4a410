"""DeepFool confined to a subspace: Jetley, Lord & Torr (2018), "With friends like these, who needs
adversaries?", NeurIPS, Sec. 4.3 and Fig. 5 (DeepFool: Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016).

Threat model: L2, minimal perturbation within span(basis); white box; untargeted against the clean
prediction k0. "Simply projecting the gradient vectors used in solving DeepFool's linearised problem
onto each subspace before otherwise solving the problem as usual": each margin gradient
w_k = grad(f_k - f_k0) becomes P w_k with P = Q Q^T, the nearest linearised boundary is
argmin_k |f_k - f_k0| / ||P w_k|| over the ``candidates`` classes ranked highest on the clean image,
and the step r_i = (|f| / ||P w|| + 1e-4) P w / ||P w|| is added to r_total; the next point is
x + (1 + overshoot) r_total, until the prediction leaves k0 or ``max_iter`` steps are spent.
Defaults are the authors': overshoot 0.02, at most 100 iterations.

The perturbation (1 + overshoot) r_total lies in span(basis) exactly; it is not clamped to [0, 1]
(clamping would leave the subspace; the paper works in unconstrained mean-subtracted image space).

Shapes: x float (N, C, H, W); basis float (C*H*W, k) with orthonormal columns, or None for plain
(unconfined, unclamped) DeepFool. Returns ``ConfinedDeepFoolResult(perturbation, success, original,
iterations)``: perturbation (N, C, H, W); success bool (N,) (the prediction at x + perturbation is not
k0); original int64 (N,); iterations int64 (N,). The model runs in eval mode with frozen parameters.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from advclaims.accel import no_autotune
from advclaims.attacks._common import check_finite_logits, check_images, check_nonnegative, check_steps, frozen
from advclaims.attacks.deepfool import _step_to_nearest_boundary



class ConfinedDeepFoolResult(NamedTuple):
    perturbation: torch.Tensor
    success: torch.Tensor
    original: torch.Tensor
    iterations: torch.Tensor


def confined_deepfool(model: nn.Module, x: torch.Tensor, basis: torch.Tensor | None, *, overshoot: float = 0.02,
                      max_iter: int = 100, candidates: int = 10) -> ConfinedDeepFoolResult:
    overshoot = check_nonnegative(overshoot, "overshoot", "pass the paper's 0.02")
    max_iter = check_steps(max_iter, "max_iter")
    if check_steps(candidates, "candidates") < 2:
        raise ValueError(f"candidates must be >= 2 (got {candidates}); the original class and at least one other")
    check_images(x)
    dims = x[0].numel() if x.shape[0] else x.shape[1:].numel()
    if basis is not None and (basis.dim() != 2 or basis.shape[0] != dims):
        raise ValueError(f"basis must be ({dims}, k) with orthonormal columns, got {tuple(basis.shape)}")
    x = x.detach()
    n = x.shape[0]
    with frozen(model), no_autotune():  # the active batch shrinks each step: no cuDNN re-tuning per size
        with torch.no_grad():
            clean_logits = check_finite_logits(model(x))
        ranked = clean_logits.topk(min(candidates, clean_logits.shape[1]), dim=1).indices
        original = ranked[:, 0]
        r_total = torch.zeros_like(x)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for _ in range(max_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            point = (x[idx] + (1 + overshoot) * r_total[idx]).requires_grad_(True)
            logits = check_finite_logits(model(point))
            still = logits.argmax(1) == original[idx]
            step = _step_to_nearest_boundary(logits, point, ranked[idx], lambda w: project_onto(w, basis))
            keep = idx[still]
            r_total[keep] += step[still]
            iterations[keep] += 1
            active[idx[~still]] = False
        perturbation = (1 + overshoot) * r_total
        with torch.no_grad():
            final = check_finite_logits(model(x + perturbation)).argmax(1)
    return ConfinedDeepFoolResult(perturbation.detach(), final != original, original, iterations)


def project_onto(v: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Q Q^T v for a batch of images v (N, C, H, W); the identity when basis is None."""
    if basis is None:
        return v
    flat = v.flatten(1)
    return ((flat @ basis) @ basis.T).view_as(v)
