"""Model registry: ``build(name, *, in_channels, num_classes, width=...)``.

Every model takes pixels in [0, 1]; normalisation is its first layer (``model.normalize``), so
attacks never see it. Widths are the first stage's channel count (64 for the papers' ResNet-18);
smaller widths give the narrow nets of the smoke budget.
"""

from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import nn

from advclaims.budgets import DEFAULT_WIDTH  # the papers' widths live in the budget table
from advclaims.models.layers import Normalize
from advclaims.models.lenet import LeNet
from advclaims.models.nin import NiN
from advclaims.models.resnet import PreActResNet18, ResNet18, RESNET_STAGES
from advclaims.models.vgg import VGG16BN
from advclaims.models.wrn import WideResNet28

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet18": ResNet18,
    "preact_resnet18": PreActResNet18,
    "vgg16_bn": VGG16BN,
    "wrn28_10": WideResNet28,
    "nin": NiN,
    "lenet": LeNet,
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def build(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    width: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    input_size: int = 32,
) -> nn.Module:
    """Build a registered architecture with its normalisation layer in front.

    Models whose head depends on the image size (``FIXED_INPUT_SIZE``, e.g. LeNet's linear layers)
    get it in their Normalize layer, so a batch of another size is refused there in one line.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
    for arg, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2),
                            ("width", width, 1), ("input_size", input_size, 1)):
        if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low):
            raise ValueError(f"model {name!r} needs an integer {arg} >= {low}, got {value!r}")
    width = DEFAULT_WIDTH[name] if width is None else int(width)
    mean = mean if mean is not None else (0.5,) * in_channels
    std = std if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need {in_channels} entries, one per input channel")
    cls = _REGISTRY[name]
    size = input_size if getattr(cls, "FIXED_INPUT_SIZE", False) else None
    return cls(in_channels=in_channels, num_classes=num_classes, width=width,
               normalize=Normalize(mean, std, size), input_size=input_size)


__all__ = ["build", "names", "Normalize", "RESNET_STAGES", "DEFAULT_WIDTH"]
