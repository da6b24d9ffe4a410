"""Layers shared by the architectures."""

from __future__ import annotations

import math

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer: inputs stay pixels in [0, 1].

    Being first in every model, it is also where a wrong input is caught: a batch of the wrong rank,
    channel count, dtype or (for a model whose head depends on it, ``size``) spatial size is one
    ValueError naming expected and got shapes, not an error deep inside a convolution. Only shapes
    and dtypes are checked, never values, so the check costs no device synchronisation.
    """

    def __init__(self, mean, std, size: int | None = None):
        super().__init__()
        if any(not math.isfinite(s) or s <= 0 for s in std) or any(not math.isfinite(m) for m in mean):
            raise ValueError(f"Normalize needs finite means and std > 0, got mean {tuple(mean)}, std {tuple(std)}; "
                             "pass the dataset's per-channel statistics")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.size = size  # not a buffer: checkpoints saved before it existed still load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return (x - self.mean) / self.std

    def _check(self, x: torch.Tensor) -> None:
        channels = self.mean.shape[1]
        wanted = f"model expects float images of shape (N, {channels}, H, W)"
        if self.size is not None:
            wanted += f" with H = W = {self.size}"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{wanted}, got a {type(x).__name__}; convert it with torch.as_tensor(x)")
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"{wanted}, got {tuple(x.shape)}; {self._layout_hint(x)}")
        if self.size is not None and tuple(x.shape[2:]) != (self.size, self.size):
            raise ValueError(f"{wanted}, got {tuple(x.shape)}; resize the images to {self.size}x{self.size} "
                             f"or build the model with input_size={x.shape[2]}")
        if not x.is_floating_point():
            raise ValueError(f"{wanted}, got dtype {x.dtype}; convert uint8 images with x.float() / 255")

    def _layout_hint(self, x: torch.Tensor) -> str:
        """The fix for a batch of the wrong rank or channel count."""
        if x.dim() == 3:
            return "add a batch dimension with x.unsqueeze(0)"
        if x.dim() != 4:
            return "pass a batch of images (N, C, H, W)"
        return (f"pass images with {self.mean.shape[1]} channel(s), from the dataset the model was built for, "
                f"or build the model with in_channels={x.shape[1]}")
