"""DeepFool: Moosavi-Dezfooli, Fawzi & Frossard (2016), "DeepFool: a simple and accurate method to
fool deep neural networks", CVPR.

Threat model: L2, minimal perturbation (no fixed radius); white box; untargeted against the
model's own prediction k0 = argmax f(x). Multi-class algorithm (the paper's Algorithm 2): at the
current point, linearise the margins f_k - f_k0 of the ``candidates`` classes ranked highest on the
clean image, step onto the nearest linearised boundary, r_i = (|f_l| / ||w_l|| + 1e-4) w_l / ||w_l||,
accumulate r_total, and evaluate the next point x + (1 + overshoot) * r_total (clamped to [0, 1]),
until the prediction leaves k0 or ``max_iter`` steps are spent. The result is
x_adv = clamp(x + (1 + overshoot) * r_total, 0, 1), as in the paper's reference code.

Vectorised: one forward and (candidates - 1) backward passes per iteration over the batch of images
still on their original side (per-sample active mask); no Python loop over images.

Labels are optional. With ``y``, images the model already misclassifies (k0 != y) are not attacked:
they come back unchanged with ``misclassified=True`` and ``success=False`` instead of counting as
zero-norm successes. ``num_classes``, when given, must match the model's logits (a guard for
callers that know it); ``candidates`` (default 10, the paper's) is clipped to the number of classes.

Returns ``DeepFoolResult(x_adv, success, misclassified, iterations)``, a NamedTuple:
    x_adv          float (N, C, H, W), new and detached, in [0, 1]
    success        bool (N,): a final forward pass puts x_adv strictly past the boundary,
                   max_{k != k0} f_k(x_adv) > f_k0(x_adv)
    misclassified  bool (N,): k0 != y (all False without y)
    iterations     int64 (N,): DeepFool steps taken per image
The model runs in eval mode with frozen parameters and is restored afterwards. The iterations use
``fast_model`` (the model's logits up to float rounding); the clean and final predictions use the model.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from advclaims.accel import no_autotune
from advclaims.attacks._common import (check_finite_logits, check_images, check_labels, check_nonnegative, check_steps,
                                       frozen, margin_loss)
from advclaims.attacks.fastpath import fast_model

STEP_SLACK = 1e-4  # the paper's code adds this to each step length so iterates do not stall on the boundary


class DeepFoolResult(NamedTuple):
    x_adv: torch.Tensor
    success: torch.Tensor
    misclassified: torch.Tensor
    iterations: torch.Tensor


def deepfool(model: nn.Module, x: torch.Tensor, *, y: torch.Tensor | None = None, num_classes: int | None = None,
             overshoot: float = 0.02, max_iter: int = 50, candidates: int = 10) -> DeepFoolResult:
    overshoot = check_nonnegative(overshoot, "overshoot", "pass the paper's 0.02, or 0 to stop on the boundary")
    max_iter = check_steps(max_iter, "max_iter")
    if check_steps(candidates, "candidates") < 2:
        raise ValueError(f"candidates must be >= 2 (got {candidates}); the original class and at least one other")
    check_images(x)
    x = x.detach()
    n = x.shape[0]
    with frozen(model), no_autotune():  # the active batch shrinks each step: no cuDNN re-tuning per size
        with torch.no_grad():
            clean_logits = check_finite_logits(model(x))
        total_classes = clean_logits.shape[1]
        if num_classes is not None and num_classes != total_classes:
            raise ValueError(f"num_classes={num_classes} but the model returns {total_classes} logits; "
                             "omit num_classes or pass the model's class count")
        misclassified = torch.zeros(n, dtype=torch.bool, device=x.device)
        if y is not None:
            check_labels(y, x, total_classes)
            misclassified = clean_logits.argmax(1) != y
        # classes ranked by clean logit; column 0 is the original prediction k0
        ranked = clean_logits.topk(min(candidates, total_classes), dim=1).indices
        original = ranked[:, 0]
        forward = fast_model(model, x)
        r_total = torch.zeros_like(x)
        iterations = torch.zeros(n, dtype=torch.long, device=x.device)
        active = ~misclassified
        for _ in range(max_iter):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            point = (x[idx] + (1 + overshoot) * r_total[idx]).clamp(0, 1).requires_grad_(True)
            logits = check_finite_logits(forward(point))
            on_original_side = margin_loss(logits, original[idx]) <= 0
            step = _step_to_nearest_boundary(logits, point, ranked[idx])
            keep = idx[on_original_side]
            r_total[keep] += step[on_original_side]
            iterations[keep] += 1
            active[idx[~on_original_side]] = False
        x_adv = (x + (1 + overshoot) * r_total).clamp(0, 1)
        with torch.no_grad():
            final_logits = check_finite_logits(model(x_adv))
        success = (margin_loss(final_logits, original) > 0) & ~misclassified
    return DeepFoolResult(x_adv.detach(), success, misclassified, iterations)


def _step_to_nearest_boundary(logits: torch.Tensor, point: torch.Tensor, ranked: torch.Tensor,
                              project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Per image, the minimal step onto the nearest linearised boundary among the ranked classes.

    ``project`` maps each gradient into a subspace first (confined DeepFool); None keeps the whole space.
    """
    original_logit = logits.gather(1, ranked[:, :1])
    best_dist = torch.full((point.shape[0],), float("inf"), device=point.device, dtype=point.dtype)
    best_dir = torch.zeros_like(point)
    for j in range(1, ranked.shape[1]):
        # one backward over the batch gives each image's gradient: images do not interact in eval mode
        f_j = (logits.gather(1, ranked[:, j:j + 1]) - original_logit).squeeze(1)
        (w_j,) = torch.autograd.grad(f_j.sum(), point, retain_graph=j < ranked.shape[1] - 1)
        if project is not None:
            w_j = project(w_j)
        w_norm = w_j.flatten(1).norm(dim=1)
        # a zero gradient (or one orthogonal to the subspace) gives no boundary to step onto
        dist = torch.where(w_norm > 1e-12, f_j.detach().abs() / w_norm.clamp_min(1e-12), float("inf"))
        closer = dist < best_dist
        best_dist = torch.where(closer, dist, best_dist)
        best_dir = torch.where(closer[:, None, None, None], w_j / w_norm.clamp_min(1e-12)[:, None, None, None], best_dir)
    # no reachable boundary (best_dist stays inf, e.g. a one-output model): zero step, not inf * 0
    return torch.where(torch.isfinite(best_dist), best_dist + STEP_SLACK, 0.0)[:, None, None, None] * best_dir
