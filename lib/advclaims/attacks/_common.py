"""Helpers shared by the attacks: freezing the model, checking inputs, projecting, input gradients.

Every attack works in pixel space: images are float tensors (N, C, H, W) with values in [0, 1]
and the model's normalisation is a layer inside the model. Attacks differentiate with respect to
the input only, so the model is frozen (eval mode, no parameter gradients) while they run.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from advclaims.accel import eager

PIXEL_TOLERANCE = 1e-6  # float error allowed outside [0, 1] before an input is rejected


class NonFiniteLogits(ValueError):
    """The model returned NaN or inf logits, so no gradient or prediction can be trusted."""


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored on exit.

    Per-module training flags are saved (not just the root's), so a model that was partly in
    eval mode comes back exactly as it was.
    """
    modes = [(module, module.training) for module in model.modules()]
    grad_flags = [(param, param.requires_grad) for param in model.parameters()]
    model.eval()
    for param, _ in grad_flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in grad_flags:
            param.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# validation: each error is one line naming the argument and the fix


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_nonnegative(value, name: str, hint: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (got {value!r}); {hint}")
    return float(value)


def check_positive(value, name: str, hint: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (got {value!r}); {hint}")
    return float(value)


def check_eps(eps) -> float:
    return check_nonnegative(eps, "eps", "pass the radius in pixel units of [0, 1], e.g. 8/255")


def check_alpha(alpha) -> float:
    return check_positive(alpha, "alpha", "pass a positive step size in pixel units, e.g. eps/4")


def check_steps(steps, name: str = "steps") -> int:
    """A validated count (the caller's: a preflight's budget passes its capped counts, nothing caps them here)."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"{name} must be an integer >= 0 (got {steps!r}); pass a non-negative number of iterations")
    return int(steps)


def check_images(x) -> None:
    """x: float (N, C, H, W), finite, pixels in [0, 1] up to PIXEL_TOLERANCE."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        dtype = x.dtype if isinstance(x, torch.Tensor) else None
        raise ValueError(
            f"x must be a 4-D float tensor (N, C, H, W), got {shape} of dtype {dtype}; "
            "add a batch dimension with x.unsqueeze(0) and convert uint8 images with x.float() / 255"
        )
    if x.numel() == 0:
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf pixels; drop or repair those images (check the data loader) "
                         "before attacking")
    low, high = float(x.min()), float(x.max())
    if low < -PIXEL_TOLERANCE or high > 1 + PIXEL_TOLERANCE:
        raise ValueError(
            f"x has pixels outside [0, 1] (min {low:.4g}, max {high:.4g}); attacks work in pixel space: "
            "pass unnormalised images scaled to [0, 1] and keep normalisation inside the model"
        )


def check_labels(y, x: torch.Tensor, num_classes: int) -> None:
    """y: integer class indices of shape (N,), each in 0..num_classes-1."""
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        dtype = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an integer tensor of class indices, got {dtype}; "
                         "convert it with torch.as_tensor(y).long()")
    if tuple(y.shape) != (x.shape[0],):
        raise ValueError(
            f"y must have shape ({x.shape[0]},), one label per image of x, got {tuple(y.shape)}; "
            "pass class indices (not one-hot vectors) for exactly the images in x"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"y holds labels in {int(y.min())}..{int(y.max())} but the model has {num_classes} classes; "
            f"pass class indices in 0..{num_classes - 1} from the dataset the model was trained on"
        )


_NON_FINITE = ("the model produced NaN/inf logits, which usually means a diverged checkpoint: retrain it "
               "(or check that its weights loaded correctly and that the input images are finite)")


def check_finite_logits(logits: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteLogits(_NON_FINITE)
    return logits


def finite_flag(device: torch.device) -> torch.Tensor:
    """A device bool that ``input_gradient_flagged`` ands each step's logits check into: no host sync per step."""
    return torch.ones((), dtype=torch.bool, device=device)


def check_finite_flag(finite: torch.Tensor) -> None:
    """NonFiniteLogits unless every logits check and-ed into ``finite`` held (one host sync for all of them)."""
    if not bool(finite):
        raise NonFiniteLogits(_NON_FINITE)


def num_classes_of(model: nn.Module, x: torch.Tensor) -> int:
    """The model's number of classes, read from one image's logits (which are checked finite). A compiled
    forward is probed eagerly: a batch-1 call would compile a graph of its own on every attack call."""
    with torch.no_grad():
        logits = eager(model)(x[:1])
    if logits.dim() != 2:
        raise ValueError(f"model must return logits of shape (N, num_classes), got {tuple(logits.shape)}")
    check_finite_logits(logits)
    return int(logits.shape[1])


def check_attack_inputs(model: nn.Module, x, y) -> None:
    """Images and labels valid for this model; call with the model already frozen."""
    check_images(x)
    if x.shape[0] == 0:
        check_labels(y, x, num_classes=1)  # shape and dtype only: an empty batch has no labels to range-check
        return
    check_labels(y, x, num_classes_of(model, x))


# ---------------------------------------------------------------------------------------------
# building blocks


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clamp x_adv into the L-inf ball of radius eps around x, then into [0, 1]."""
    return (x + (x_adv - x).clamp(-eps, eps)).clamp(0.0, 1.0)


def project_linf_(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """project_linf in place on x_adv (the same operations in the same order, so the same bits)."""
    return x_adv.sub_(x).clamp_(-eps, eps).add_(x).clamp_(0.0, 1.0)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample max_{i != y} z_i - z_y: positive exactly when y is not the prediction."""
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(dim=1) - true_logit


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (no batch mean, so each image's gradient ignores the batch size)."""
    return nn.functional.cross_entropy(logits, y, reduction="none")


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """d sum_i loss_fn(model(x), y)_i / dx, with the logits checked finite; parameters get no .grad."""
    x = x.detach().requires_grad_(True)
    logits = check_finite_logits(model(x))
    loss = loss_fn(logits, y).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def input_gradient_flagged(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                           finite: torch.Tensor) -> torch.Tensor:
    """input_gradient (the same operations, so the same bits) with the logits' finiteness and-ed into ``finite`` in
    place (``finite_flag``) instead of checked: no host sync; the caller runs check_finite_flag once at the end."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    finite &= torch.isfinite(logits).all()
    loss = loss_fn(logits, y).sum()
    (grad,) = torch.autograd.grad(loss, x)
    return grad
