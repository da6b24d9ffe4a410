"""NRF, the attack on non-robust features: Kim, Lee & Ro (2021), "Distilling Robust and Non-Robust
Features in Adversarial Examples by Information Bottleneck", NeurIPS, Section 4, Eq. (8) and Table 4.

Threat model: as in the paper, L2 with no fixed radius (a C&W-style minimal-perturbation attack in
tanh space); with ``eps`` given, confined to the L-inf ball of radius eps (same objective, smaller
box). White box. The attack needs the model split at an intermediate layer, ``encode(x) -> Z``
(N, C, H, W) and ``tail(Z) -> logits`` with ``tail(encode(x)) == model(x)``, and a 0/1 channel mask
``mask`` (N, C) per image: the non-robust channel index i_nr that the information bottleneck finds
(``advclaims.analysis.info_bottleneck.bottleneck.fit_channel_masks``); Table 4's ablations pass the
robust index instead, or minimise the norm.

With x' = lo + (hi - lo) * (tanh(w) + 1) / 2 (box [lo, hi] = [0, 1], or [x - eps, x + eps] ∩ [0, 1]),
Adam (learning rate ``lr``) minimises for ``steps`` iterations, per image,
    ||x' - x||_2^2 + c * f(x') - s * ||mask · G||_2,     G = ∂(-f)/∂Z (detached),
with f = max(z_y - max_{i != y} z_i, 0) the C&W margin on logits, s = +1 for
``gradient_norm="max"`` (NRF; Table 4's ||G||↑) and s = -1 for ``"min"`` (||G||↓). As in the
authors' code, the norm term is torch.dist(Z, Z.detach() - mask·G): its gradient in Z is the unit
vector u = mask·G / ||mask·G||, a fixed-length push of the latent along the masked direction that
lowers the margin (s = +1) or raises it (s = -1). It is computed here as <Z, u> (same gradient;
zero where G vanishes, i.e. on images already misclassified, where torch.dist's gradient is
undefined).

Per image, the misclassified iterate with the smallest L2 distance is returned; an image never
misclassified is returned unchanged (x itself), as in C&W and the authors' code.

Defaults from the authors' code: c = 0.1, lr = 0.1, steps = 200, kappa = 0. Two deliberate
differences from that code, so that a batch gives exactly the result of its images attacked one by
one (docs/claims.md's attack invariants): the norm is taken per image (the code takes one norm over the
whole batch), and every step runs (the code stops early when the batch's total cost rose since the
last third of the schedule).

Shapes: x float (N, C, H, W) in [0, 1]; y int64 (N,); mask (N, C_Z), 0/1, on Z's channels;
returns a new detached (N, C, H, W) tensor. The model runs in eval mode with frozen parameters
and is restored afterwards; gradients flow to the input only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from advclaims.attacks._common import (check_attack_inputs, check_eps, check_finite_logits, check_nonnegative,
                                       check_positive, check_steps, frozen, margin_loss)
from advclaims.attacks.cw import TANH_EDGE

GRADIENT_NORMS = {"max": 1.0, "min": -1.0}


def nrf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mask: torch.Tensor,
        encode: Callable[[torch.Tensor], torch.Tensor], tail: Callable[[torch.Tensor], torch.Tensor],
        c: float = 0.1, steps: int = 200, lr: float = 0.1, eps: float | None = None,
        gradient_norm: str = "max") -> torch.Tensor:
    c = check_nonnegative(c, "c", "pass the weight of the misclassification term, e.g. 0.1 (the paper's)")
    lr = check_positive(lr, "lr", "pass Adam's learning rate, e.g. 0.1 (the paper's)")
    steps = check_steps(steps)
    eps = None if eps is None else check_eps(eps)
    if gradient_norm not in GRADIENT_NORMS:
        raise ValueError(f"gradient_norm must be 'max' (NRF) or 'min' (Table 4's ablation), got {gradient_norm!r}")
    sign = GRADIENT_NORMS[gradient_norm]
    with frozen(model):
        check_attack_inputs(model, x, y)
        x = x.detach()
        weights = _channel_weights(mask, x, encode)
        lo, hi = _box(x, eps)
        width = hi - lo
        w = _to_tanh_space(x, lo, width).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=lr)
        best = x.clone()
        best_dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
        for step in range(steps + 1):
            x_new = lo + width * (torch.tanh(w) + 1) / 2
            z = encode(x_new)
            logits = check_finite_logits(tail(z))
            margin = margin_loss(logits, y)  # > 0 exactly when misclassified
            dist = (x_new - x).flatten(1).pow(2).sum(1)
            improved = (margin > 0) & (dist < best_dist)
            best = torch.where(improved[:, None, None, None], x_new.detach(), best)
            best_dist = torch.where(improved, dist.detach(), best_dist)
            if step == steps:
                break
            f = (-margin).clamp(min=0)
            (grad_z,) = torch.autograd.grad(-f.sum(), z, retain_graph=True)
            push = weights * grad_z
            norm = push.flatten(1).norm(dim=1).clamp(min=torch.finfo(push.dtype).tiny)
            unit = (push / norm[:, None, None, None]).detach()
            loss = dist.sum() + c * f.sum() - sign * (z * unit).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return best.detach()


def _channel_weights(mask, x: torch.Tensor, encode) -> torch.Tensor:
    """mask (N, C_Z) of 0/1 as float weights (N, C_Z, 1, 1), checked against Z's shape."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape[0] != x.shape[0]:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a (N, C) tensor with one row per image of x (N = {x.shape[0]}), got {shape}; "
                         "pass the channel index the information bottleneck fitted on these images")
    values = mask.to(torch.float32)
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError("mask must hold only 0 and 1 (a channel is in the set or not)")
    if x.shape[0]:
        with torch.no_grad():
            channels = encode(x[:1]).shape[1]
        if mask.shape[1] != channels:
            raise ValueError(f"mask has {mask.shape[1]} channels but encode(x) has {channels}; "
                             "fit the mask on the same split of the same model")
    return values.to(device=x.device, dtype=x.dtype)[:, :, None, None]


def _box(x: torch.Tensor, eps: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    if eps is None:
        return torch.zeros_like(x), torch.ones_like(x)
    return (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)


def _to_tanh_space(x: torch.Tensor, lo: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """w with lo + width * (tanh(w) + 1) / 2 = x (pixels on the box's edge pulled just inside)."""
    scaled = torch.where(width > 0, 2 * (x - lo) / width.clamp(min=1e-12) - 1, torch.zeros_like(x))
    return torch.atanh(scaled.clamp(-TANH_EDGE, TANH_EDGE)).detach()
