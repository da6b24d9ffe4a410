"""Performance accounting: wall time, FLOPs counted by torch, and model FLOP utilisation (MFU).

MFU = achieved FLOP/s / the device's dense bf16 peak. It is a CUDA figure: a CPU has no entry in
``BF16_DENSE_PEAK`` and gets ``None`` (report its achieved FLOP/s instead), as does a GPU this table
does not know. FLOPs are counted with torch.utils.flop_counter's formulas (those of its
FlopCounterMode) on the real computation: forward, backward and attack steps alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

# dense bf16 tensor-core peak in FLOP/s (vendor datasheets, without structured sparsity)
BF16_DENSE_PEAK = {
    "H100 SXM": 989.4e12,
    "H100 PCIe": 756e12,
    "H200": 989.4e12,
    "A100": 312e12,
}


def peak_key(device_name: str) -> str | None:
    """The ``BF16_DENSE_PEAK`` entry for a CUDA device name, or None when the table does not know it.

    H100 names: "NVIDIA H100 PCIe" is the PCIe card; "NVIDIA H100 80GB HBM3" and names with "SXM"
    are SXM. Other H100 variants (NVL) have other peaks and are not guessed.
    """
    name = device_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name:
        if "PCIE" in name:
            return "H100 PCIe"
        return "H100 SXM" if "SXM" in name or "HBM3" in name else None
    if "A100" in name:
        return "A100"
    return None


def device_peak(device: torch.device | str) -> tuple[str, float | None]:
    """(device name, bf16 dense peak FLOP/s or None). CPUs and unknown GPUs have no peak here."""
    device = torch.device(device)
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    key = peak_key(name)
    return name, BF16_DENSE_PEAK[key] if key else None


def mfu(flops_per_second: float, device: torch.device | str) -> float | None:
    """Achieved FLOP/s as a fraction of the device's bf16 dense peak; None where no peak is known."""
    _, peak = device_peak(device)
    return None if peak is None else flops_per_second / peak


class _FlopCount(TorchDispatchMode):
    """Sums torch.utils.flop_counter's formulas over every operation run while active.

    FlopCounterMode applies the same formulas, but its module tracker hooks the inputs of every
    module and fails inside ``torch.autograd.grad`` on a leaf input, which is how attacks take
    input gradients; this mode counts without attributing FLOPs to modules.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` by torch.utils.flop_counter's formulas (matmuls, convolutions and
    their backward passes; elementwise operations count zero)."""
    with _FlopCount() as counter:
        fn()
    return counter.total


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work, so a wall-clock reading covers it; a no-op elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str) -> float:
    """Seconds of wall time for one call of ``fn``, its device work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(samples: list[float]) -> float:
    if not samples:
        raise ValueError("no timing samples: run at least one round")
    return statistics.median(samples)


def si(value: float, unit: str) -> str:
    """1.23e9, "FLOP/s" -> "1.23 GFLOP/s"."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


@dataclass
class Comparison:
    """One computation timed as ours and as a peer's, on the same model, batch and budget."""

    name: str
    peer: str
    batch: int
    ours_seconds: list[float]
    peer_seconds: list[float]
    strength: str = ""           # both results' quality at the budget, "ours / peer", e.g. robust accuracy
    target: float | None = None  # the speedup to reach, None where none is set
    flops: tuple[int, int] | None = None  # (ours, peer) per call: equal work means the speedup is efficiency

    @property
    def work_ratio(self) -> float | None:
        """peer FLOPs / our FLOPs per call, None when not counted."""
        return None if self.flops is None else self.flops[1] / self.flops[0]

    @property
    def speedup(self) -> float:
        """median(peer) / median(ours): how many times faster ours is."""
        return median(self.peer_seconds) / median(self.ours_seconds)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "(no target)"
        return "PASS" if self.speedup >= self.target else "FAIL"


@dataclass
class Throughput:
    """Training images per second, with the FLOPs counted per image, on one device."""

    name: str
    images_per_second: float
    flops_per_image: int
    device: torch.device
    notes: dict = field(default_factory=dict)

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_image * self.images_per_second
