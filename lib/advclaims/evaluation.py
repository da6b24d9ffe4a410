"""Batched prediction, accuracy and attack evaluation."""

from __future__ import annotations

from typing import Callable

import torch

from advclaims import timing
from advclaims.attacks._common import check_finite_logits


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels in eval mode, in batches; NaN/inf logits raise NonFiniteLogits (argmax would
    quietly call them class 0)."""
    was_training = model.training
    model.eval()
    try:
        out = [check_finite_logits(model(x[i:i + batch_size])).argmax(1) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


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
