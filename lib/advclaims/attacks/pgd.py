"""PGD: Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant
to Adversarial Attacks", ICLR.

Threat model: L-inf, radius ``eps`` in pixel units of [0, 1]; white box. ``steps`` iterations of
x <- Proj_{B(x0, eps) ∩ [0,1]}(x ± alpha * sign(grad_x loss)), ascending the loss (untargeted) or
descending it toward y (``targeted=True``, y is then the target label).
``loss="ce"`` is cross-entropy (the paper's); ``loss="margin"`` is max_{i != y} z_i - z_y on logits
(the Carlini-Wagner margin, "PGD-CW"). Losses are summed, not averaged, over the batch.

Starting point, in order of precedence:
  * ``init`` (a tensor broadcastable to x): the starting perturbation, projected onto the ball.
    Passing each image its slice of one noise tensor makes a batch give exactly the result of its
    images attacked one by one, random start included.
  * ``random_start=True`` (default): uniform noise in [-eps, eps] of x's full shape, drawn with
    ``generator`` on the generator's device (the CPU when None: torch's global RNG), then moved to
    x's device; the same seed gives the same attack, but the noise of image i depends on the
    batch it is drawn in.
  * otherwise x itself (steps=0 then returns x; eps=0 always returns x).

Defaults from the paper: CIFAR-10 eps=8/255, alpha=2/255, steps=7 (training) or 20 (evaluation);
MNIST eps=0.3, alpha=0.01, steps=40/100. No defaults here: every budget is explicit.

Shapes: x float (N, C, H, W) in [0, 1]; y int64 (N,); returns a new detached (N, C, H, W) tensor.
The model runs in eval mode with frozen parameters and is restored afterwards. Gradients come from
``fast_model`` (BatchNorm folded into convolutions, channels_last on the CPU): the model's logits up
to float rounding, so a gradient component within rounding of 0 may take the other sign.
"""

from __future__ import annotations

import torch
from torch import nn

from advclaims.attacks._common import (check_alpha, check_attack_inputs, check_eps, check_finite_flag, check_steps,
                                       cross_entropy_loss, finite_flag, frozen, input_gradient_flagged, margin_loss,
                                       project_linf, project_linf_)
from advclaims.attacks.fastpath import fast_model

LOSSES = {"ce": cross_entropy_loss, "margin": margin_loss}


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        random_start: bool = True, targeted: bool = False, generator: torch.Generator | None = None,
        loss: str = "ce", init: torch.Tensor | None = None) -> torch.Tensor:
    eps, alpha, steps = check_eps(eps), check_alpha(alpha), check_steps(steps)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    with frozen(model):
        check_attack_inputs(model, x, y)
        x = x.detach()
        forward = fast_model(model, x)
        x_adv = project_linf(x + _start(x, eps, random_start, generator, init), x, eps)
        finite = _steps(forward, x_adv, x, y, eps=eps, alpha=alpha, steps=steps, targeted=targeted, loss=loss)
    check_finite_flag(finite)  # every step's logits, checked once: no host sync per step on CUDA
    return x_adv.detach()


def pgd_from(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
             init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD from the starting perturbation ``init`` for adversarial training (training.train): the same steps as
    ``pgd(..., init=init)``, bit for bit, without the per-call input checks (training checks its first batch once:
    images from a uint8 split stay in [0, 1], and cross-entropy checks the labels) and with the logits' finiteness
    returned as a device bool instead of checked (the caller checks it once per epoch: no host sync per step).
    Returns (x_adv, finite)."""
    eps, alpha, steps = check_eps(eps), check_alpha(alpha), check_steps(steps)
    with frozen(model):
        x = x.detach()
        forward = fast_model(model, x)
        x_adv = project_linf(x + _start(x, eps, False, None, init), x, eps)
        finite = _steps(forward, x_adv, x, y, eps=eps, alpha=alpha, steps=steps, targeted=False, loss="ce")
    return x_adv.detach(), finite


def _steps(forward, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
           targeted: bool, loss: str) -> torch.Tensor:
    """The PGD iterations on ``x_adv`` in place; returns whether every step's logits were finite (a device bool)."""
    loss_fn = LOSSES[loss]
    step = (-1.0 if targeted else 1.0) * alpha  # targeted descends the loss toward y
    finite = finite_flag(x.device)
    for _ in range(steps):
        grad = input_gradient_flagged(forward, x_adv, y, loss_fn, finite)
        project_linf_(x_adv.add_(grad.sign_().mul_(step)), x, eps)  # x_adv is ours: update it in place
    return finite


def _start(x, eps, random_start, generator, init) -> torch.Tensor | float:
    if init is not None:
        if not isinstance(init, torch.Tensor) or not _broadcasts_to(init.shape, x.shape):
            shape = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ValueError(f"init must be a tensor broadcastable to x's shape {tuple(x.shape)}, got {shape}; "
                             "pass one starting perturbation per image (or one for all)")
        return init.to(device=x.device, dtype=x.dtype)
    if not random_start:
        return 0.0
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.empty(x.shape, dtype=x.dtype, device=device).uniform_(-eps, eps, generator=generator)
    return noise.to(x.device)


def _broadcasts_to(shape, target) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False
