"""DeepFool toward a fixed target class: the boundary-point search of Jetley, Lord & Torr (2018),
"With friends like these, who needs adversaries?", NeurIPS (Algorithm 1; their public
``adversarial_DeepFool_matconvnet_fixed_label``, a port of Moosavi-Dezfooli et al.'s DeepFool, CVPR 2016).

Threat model: L2, minimal perturbation toward ``target``; white box. At each step the margin
f_target - f_k (k = the current prediction; the clean one, k0, at the first step) is linearised and the
iterate steps onto its zero,
r_i = (|f| / ||w|| + 1e-4) w / ||w||, accumulating r_total; the next point is x + (1 + overshoot) r_total;
it stops when the prediction is ``target`` or after ``max_iter`` steps (the authors: 5).

Not clamped to [0, 1]: the authors search boundary points in unconstrained (mean-subtracted) image
space, and the points only serve to measure the network's curvature there.

Shapes: x float (N, C, H, W); target an int or int64 (N,). Returns
``TargetedDeepFoolResult(perturbation, success, original)``: perturbation = (1 + overshoot) r_total
(N, C, H, W), success bool (N,) (the prediction at x + perturbation is the target), original int64 (N,)
(the clean prediction k0). Images already predicted as the target come back with a zero perturbation
and success False. The model runs in eval mode with frozen parameters and is restored afterwards.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from advclaims.accel import no_autotune
from advclaims.attacks._common import check_finite_logits, check_images, check_nonnegative, check_steps, frozen

STEP_SLACK = 1e-4  # DeepFool's reference code adds this to each step so iterates do not stall on the boundary


class TargetedDeepFoolResult(NamedTuple):
    perturbation: torch.Tensor
    success: torch.Tensor
    original: torch.Tensor


def targeted_deepfool(model: nn.Module, x: torch.Tensor, target, *, overshoot: float = 0.02,
                      max_iter: int = 5) -> TargetedDeepFoolResult:
    overshoot = check_nonnegative(overshoot, "overshoot", "pass DeepFool's 0.02")
    max_iter = check_steps(max_iter, "max_iter")
    check_images(x)
    x = x.detach()
    n = x.shape[0]
    target = torch.as_tensor(target, device=x.device).long().expand(n).clone()
    r_total = torch.zeros_like(x)
    with frozen(model), no_autotune():  # the active batch shrinks each step: no cuDNN re-tuning per size
        with torch.no_grad():
            clean_logits = check_finite_logits(model(x))
        original = clean_logits.argmax(1)
        if n and (int(target.min()) < 0 or int(target.max()) >= clean_logits.shape[1]):
            raise ValueError(f"target holds class indices outside 0..{clean_logits.shape[1] - 1}")
        active = original != target
        for _ in range(max_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            point = (x[idx] + (1 + overshoot) * r_total[idx]).requires_grad_(True)
            logits = check_finite_logits(model(point))
            current = logits.argmax(1)
            reached = current == target[idx]
            # the boundary in the way is the one with the class now predicted (a third class may take over)
            margin = logits.gather(1, target[idx, None]) - logits.gather(1, current[:, None])
            (w,) = torch.autograd.grad(margin.sum(), point)
            w_norm = w.flatten(1).norm(dim=1).clamp_min(1e-12)
            step = ((margin.detach().squeeze(1).abs() / w_norm + STEP_SLACK) / w_norm)[:, None, None, None] * w
            go = idx[~reached]
            r_total[go] += step[~reached]
            active[idx[reached]] = False
        perturbation = (1 + overshoot) * r_total
        with torch.no_grad():
            final = check_finite_logits(model(x + perturbation)).argmax(1)
    success = (final == target) & (original != target)
    return TargetedDeepFoolResult(perturbation.detach(), success, original)
