"""The fast path: precision, memory format, cuDNN autotuning and compilation per device.

On CUDA, training and first-order attacks run under bf16 autocast with channels_last weights and
activations, cuDNN picks its fastest kernels (``cudnn.benchmark``), and the training forward pass
may be compiled with ``torch.compile``. On the CPU everything stays fp32 and eager: CPU bf16 is
slower than fp32 without AMX units, and inductor's compile time exceeds a smoke run's training.

Gradient-of-gradient code (the curvature operator, Algorithm 1) never runs under this module's
compile: ``torch.compile`` cannot double-backward. bf16 never reaches it either: finite
differences of gradients need fp32.

``precision`` is part of a model's spec (it changes the trained weights), so a bf16 CUDA model
and an fp32 CPU model are different checkpoints in the store.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16")
_DEVICE = re.compile(r"cpu|cuda(?::(\d{1,6}))?")


def parse_device(choice, cuda_count: int) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' on a machine with ``cuda_count`` GPUs; ValueError otherwise."""
    if choice == "auto":
        return torch.device("cuda" if cuda_count > 0 else "cpu")
    match = _DEVICE.fullmatch(choice) if isinstance(choice, str) else None
    if match is None:
        raise ValueError(f"{choice!r} is not a device: use cpu, cuda, cuda:N or auto")
    if choice != "cpu" and cuda_count == 0:
        raise ValueError(f"{choice}: CUDA is not available on this machine; use cpu or auto")
    if match.group(1) is not None and int(match.group(1)) >= cuda_count:
        raise ValueError(f"{choice}: this machine has {cuda_count} CUDA device(s); use cuda:0 to cuda:{cuda_count - 1}")
    return torch.device(choice)


@dataclass(frozen=True)
class Accel:
    """How one device runs: ``precision`` "fp32" or "bf16"; ``compile`` the forward of training and
    first-order attacks; ``deterministic`` CUDA kernels only."""

    device: torch.device
    precision: str = "fp32"
    compile: bool = False
    deterministic: bool = False

    def autocast(self):
        """bf16 autocast on this device when precision is bf16; a no-op otherwise."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def resolve(device, precision: str = "auto", compile: str | bool = "auto", deterministic: bool = False) -> Accel:
    """The settings for ``device``: "auto" means bf16 and compile on CUDA, fp32 and eager elsewhere.

    ``deterministic`` trades speed for repeatability on CUDA: deterministic cuDNN and torch kernels,
    no autotuning (an error names any operation that has no deterministic kernel).
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if compile == "auto":
        compile = device.type == "cuda"
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable sums
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes per run: autotuned kernels pay off at once
    return Accel(device, precision, bool(compile), deterministic)


# CUDA kernels this suite uses whose results can differ between identical runs (PyTorch's
# reproducibility notes): atomics in backward passes, and cuDNN's run-time choice of algorithm.
CUDA_NONDETERMINISTIC = (
    "cuDNN convolution backward (input and weight gradients), with algorithms chosen by cudnn.benchmark",
    "max_pool2d backward and adaptive/avg pool backward (atomic adds)",
    "index_put_/scatter_add backward in data augmentation and attacks' per-image indexing (atomic adds)",
    "bf16 autocast: summation order inside matmul/conv kernels may vary with the chosen algorithm",
)


def determinism(accel: Accel, threads: int) -> dict:
    """What the report says about repeatability on this run's device."""
    if accel.device.type != "cuda":
        return {"device": str(accel.device), "repeatable": True, "threads": threads, "nondeterministic": [],
                "statement": f"CPU with {threads} thread(s): the same seeds give identical statistics "
                             f"(tests/test_determinism.py compares two runs' report.json)."}
    if accel.deterministic:
        return {"device": str(accel.device), "repeatable": True, "threads": threads, "nondeterministic": [],
                "statement": "CUDA with --repro-deterministic: deterministic kernels only, no cuDNN autotuning."}
    return {"device": str(accel.device), "repeatable": False, "threads": threads,
            "nondeterministic": list(CUDA_NONDETERMINISTIC),
            "statement": "CUDA fast path: the operations listed can change the last bits of a statistic between "
                         "identical runs. That noise is far below the seed-to-seed spread the intervals carry; to "
                         "confirm that no verdict depends on it, rerun with --repro-deterministic and "
                         "`advclaims compare OLD/report.json NEW/report.json --fail-on-flip`."}


class CompiledForward(torch.nn.Module):
    """``torch.compile`` of a model's forward, falling back to eager (with one warning) when the
    compiler fails on this model or machine: a missing compiler must cost speed, never a result.

    Parameters, buffers and train/eval mode are the wrapped model's own; ``state_dict`` is too.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self._compiled = torch.compile(model)
        self._failed = False

    def forward(self, x):
        if not self._failed:
            try:
                return self._compiled(x)
            except Exception as err:  # inductor/dynamo failures: any type; eager is always correct
                self._failed = True
                warnings.warn(f"torch.compile failed on {type(self.model).__name__} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); training continues eagerly")
        return self.model(x)


def fast_forward(model: torch.nn.Module, accel: Accel) -> torch.nn.Module:
    """The module training and first-order attacks call: compiled on request, the model itself
    otherwise. Never hand it to code that differentiates twice (the curvature operator)."""
    return CompiledForward(model) if accel.compile else model
