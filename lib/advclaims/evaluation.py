"""Batched prediction, accuracy and attack evaluation."""

from __future__ import annotations

from typing import Callable

import torch

from advclaims import timing
from advclaims.attacks._common import check_finite_logits, frozen
from advclaims.attacks.fastpath import fast_model


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels in eval mode, in batches; NaN/inf logits raise NonFiniteLogits (argmax would
    quietly call them class 0). The forward is the attacks' ``fast_model`` (BatchNorm folded into the
    convolutions, channels_last on the CPU): the model's logits up to float rounding; for the trained smoke NiN
    on one CPU thread 1.45 times as fast at 500 images a call (docs/performance.md)."""
    if len(x) == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    with frozen(model):
        forward = fast_model(model, x)
        return torch.cat([check_finite_logits(forward(x[i:i + batch_size])).argmax(1)
                          for i in range(0, len(x), batch_size)])


def correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Per-image 0/1 correctness (float), for statistics over images."""
    return (predict(model, x, batch_size=batch_size) == y).float()


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    return correct(model, x, y, batch_size=batch_size).mean().item()


def attack_batched(attack: Callable, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                   batch_size: int = 500, **kwargs) -> torch.Tensor:
    """Run an attack over a large set in batches; keyword budgets go to the attack unchanged. Its seconds count as
    the instance's attacks phase (advclaims.timing)."""
    with timing.phase("attacks"):
        return torch.cat([attack(model, x[i:i + batch_size], y[i:i + batch_size], **kwargs)
                          for i in range(0, len(x), batch_size)])
