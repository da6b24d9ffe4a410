"""Datasets as whole tensors on the model's device: ``load`` reads a split (``advclaims.data.readers``) into a
``Split``; ``augment`` is training's random crop and flip, as tensor ops.

Images are kept as uint8 (N, C, H, W) and turned into floats in [0, 1] batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from advclaims.data.readers import download_with_torchvision, read_arrays
from advclaims.data.registry import DatasetCorrupt, DatasetMissing, default_root, info


@dataclass
class Split:
    """One split held as tensors: ``x`` uint8 (N, C, H, W), ``y`` int64 (N,)."""

    name: str
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device) -> "Split":
        return Split(self.name, self.x.to(device), self.y.to(device))

    def images(self, idx=None) -> torch.Tensor:
        """Float pixels in [0, 1] for the given indices (all when None)."""
        x = self.x if idx is None else self.x[idx]
        return x.float().div_(255.0)

    def subset(self, n: int | None, *, seed: int = 0) -> "Split":
        """The same ``n`` examples for every run with this seed (a seeded permutation's prefix)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values.to(self.x.device)
        return Split(self.name, self.x[idx], self.y[idx])

    def head(self, n: int | None) -> "Split":
        """The first ``n`` examples (test sets: the canonical order)."""
        if n is None or n >= len(self):
            return self
        return Split(self.name, self.x[:n], self.y[:n])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        order = torch.randperm(n, generator=generator, device=_drawn_on(generator)).to(self.x.device) if shuffle else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size] if shuffle else slice(start, start + batch_size)
            yield self.images(idx), self.y[idx]


def _drawn_on(generator: torch.Generator | None):
    """Where a draw from ``generator`` is made: its own device (a CUDA generator draws on the GPU, no host copy)."""
    return generator.device if generator is not None else None


def augment(x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, as tensor ops on x's device."""
    n, _, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=generator, device=_drawn_on(generator)).to(x.device) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
    if pad > 0:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=_drawn_on(generator)).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=_drawn_on(generator)).to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    return x


def load(name: str, split: str, *, root: str | Path | None = None, device="cpu", download: bool = False,
         limit: int | None = None) -> Split:
    """Load a whole split onto ``device``. Raises DatasetMissing with instructions when absent."""
    meta = info(name)
    root = Path(root).expanduser() if root is not None else default_root()
    try:
        x, y = read_arrays(name, split, root, limit=limit)
    except DatasetMissing:
        if not download:
            raise
        download_with_torchvision(name, root)
        x, y = read_arrays(name, split, root, limit=limit)
    if x.shape[1:] != (meta.channels, meta.size, meta.size):
        raise DatasetCorrupt(
            f"{name} {split} images have shape {x.shape[1:]}, expected {(meta.channels, meta.size, meta.size)}: "
            f"the files under {root} are not {name}"
        )
    if len(y) == 0:
        raise DatasetCorrupt(f"{name} {split} under {root} holds no examples")
    if y.min() < 0 or y.max() >= meta.num_classes:
        raise DatasetCorrupt(f"{name} {split} labels fall outside 0..{meta.num_classes - 1}: the files under {root} are not {name}")
    # np.require copies read-only arrays (read_idx's np.frombuffer views an immutable bytes object):
    # a tensor over them would let in-place writes mutate that bytes object.
    x = np.require(x, dtype=np.uint8, requirements=["C_CONTIGUOUS", "WRITEABLE"])
    return Split(name, torch.from_numpy(x).to(device), torch.from_numpy(y.astype(np.int64)).to(device))
