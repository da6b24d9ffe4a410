"""The fast path: precision, memory format, cuDNN autotuning and compilation per device.

On CUDA, training and first-order attacks run under bf16 autocast with channels_last weights and
activations, cuDNN picks its fastest kernels (``cudnn.benchmark``), and the training forward pass
may be compiled with ``torch.compile``. On the CPU everything stays fp32 and eager: CPU bf16 is
slower than fp32 without AMX units, and inductor's compile time exceeds a smoke run's training.

Gradient-of-gradient code (the curvature operator, Algorithm 1) never runs under this module's
compile: ``torch.compile`` cannot double-backward. bf16 never reaches it either: finite
differences of gradients need fp32.

``precision`` is part of a model's spec (it changes the trained weights), so a bf16 CUDA model
and an fp32 CPU model are different checkpoints in the store; so are ``compile``, ``deterministic``
and ``tf32`` when they differ from the CPU's defaults (``key_fields``).

"fp32" on CUDA is full IEEE fp32: ``resolve`` turns TF32 (torch's default for cuDNN convolutions: a
10-bit mantissa) off for convolutions and matmuls, since the curvature finite differences, DeepFool
norms and response differences need full precision; ``tf32=True`` asks for it and is keyed.
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
    tf32: bool = False          # CUDA fp32 convolutions/matmuls in TF32 (10-bit mantissa); always False on the CPU

    def autocast(self):
        """bf16 autocast on this device when precision is bf16; a no-op otherwise."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA fp32 convolutions and matmuls on (``enabled``) or off (full IEEE fp32); process-wide."""
    mode = "tf32" if enabled else "ieee"
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cuda.matmul.fp32_precision = mode


def tf32_settings() -> dict:
    """What torch will do with CUDA fp32 convolutions and matmuls now (for the report and gpu_check)."""
    return {"cudnn_conv": torch.backends.cudnn.conv.fp32_precision,
            "cuda_matmul": torch.backends.cuda.matmul.fp32_precision}


def key_fields(accel: "Accel", world: int = 1, unsynced_batchnorm: bool = False) -> dict:
    """The settings beyond ``precision`` that change a trained model's or an attack's numbers, for store keys:
    only those that differ from the CPU's defaults, so that every key of a default CPU run stays what it was.

    ``world``: the ranks a model is trained on; keyed only when BatchNorm statistics are per rank
    (``unsynced_batchnorm``: DDP on gloo; on CUDA training.train uses SyncBatchNorm, the same model as one process).
    """
    fields = {}
    if accel.compile:
        fields["compile"] = True  # inductor fuses kernels (other rounding); compiled training drops the last batch
    if accel.deterministic and accel.device.type == "cuda":  # the CPU's kernels are the same either way
        fields["deterministic"] = True
    if accel.tf32:
        fields["tf32"] = True
    if world > 1 and unsynced_batchnorm:
        fields["world"] = world
    return fields


def resolve(device, precision: str = "auto", compile: str | bool = "auto", deterministic: bool = False,
            tf32: bool = False) -> Accel:
    """The settings for ``device``: "auto" means bf16 and compile on CUDA, fp32 and eager elsewhere.

    ``deterministic`` trades speed for repeatability on CUDA: deterministic cuDNN and torch kernels,
    no autotuning (an error names any operation that has no deterministic kernel; the few this suite needs
    without one run inside ``nondeterministic_allowed``, with a warning, and the report lists them).
    ``tf32``: on CUDA, TF32 is off unless asked for (and then keyed); the CPU has none.
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
    tf32 = bool(tf32) and device.type == "cuda"
    if device.type == "cuda":
        set_tf32(tf32)
    return Accel(device, precision, bool(compile), deterministic, tf32)


@contextlib.contextmanager
def nondeterministic_allowed():
    """Inside: an operation without a deterministic CUDA kernel (bicubic/antialiased ``F.interpolate``
    backward) warns instead of raising under ``--repro-deterministic``; outside, the setting is as it was."""
    if not torch.are_deterministic_algorithms_enabled() or torch.is_deterministic_algorithms_warn_only_enabled():
        yield
        return
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True)


@contextlib.contextmanager
def no_autotune():
    """cuDNN autotuning off inside: for attacks whose active batch shrinks every iteration (DeepFool family),
    where ``cudnn.benchmark`` would re-tune every convolution at each new batch size."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def compile_counters() -> dict:
    """torch.compile's counters in this process: frames compiled, graphs, graph breaks, and recompilations (frames
    compiled beyond one per CompiledForward called: exact without graph breaks), plus eager fallbacks."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # no dynamo on this build
        return {}
    frames = int(counters["frames"]["ok"])
    breaks = int(sum(counters["graph_break"].values()))
    return {"frames_ok": frames, "frames_total": int(counters["frames"]["total"]),
            "unique_graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": breaks,
            "compiled_forwards": _COMPILE_STATE["called"], "eager_fallbacks": _COMPILE_STATE["failed"],
            "recompiles": max(0, frames - _COMPILE_STATE["called"]) if breaks == 0 else None}


def compile_since(before: dict) -> dict:
    """compile_counters() now less ``before`` (an earlier compile_counters()): what one training compiled."""
    now = compile_counters()
    if not now or not before:
        return now
    delta = {k: now[k] - before[k] for k in ("frames_ok", "frames_total", "unique_graphs", "graph_breaks",
                                              "compiled_forwards", "eager_fallbacks")}
    delta["recompiles"] = (max(0, delta["frames_ok"] - delta["compiled_forwards"]) if delta["graph_breaks"] == 0
                           else None)
    return delta


_COMPILE_STATE = {"called": 0, "failed": 0}  # CompiledForwards of this process: called once or more; fell back


# CUDA kernels this suite uses whose results can differ between identical runs (PyTorch's reproducibility notes and
# torch.use_deterministic_algorithms' list): atomics in backward passes, and run-time choices of algorithm. Not in it:
# the global average pools (adaptive_avg_pool2d to 1x1 is a mean), 2x2 stride-2 max-pool backward (no overlapping
# windows), data augmentation (never differentiated).
CUDA_NONDETERMINISTIC = (
    "cuDNN convolution forward and backward: the algorithm cudnn.benchmark picks can change between runs, and "
    "some backward (input and weight gradient) algorithms accumulate with atomics",
    "advanced-indexing backward (index_put_ with accumulate) where attacks differentiate through per-image "
    "selections: atomic adds",
    "max_pool2d backward with overlapping windows (NiN's 3x3 stride-2 pools): atomic adds",
    "bicubic/antialiased F.interpolate backward (CV-10's resampling defence): atomic adds",
    "cuBLAS matmuls (bf16 and fp32): split-K reductions without CUBLAS_WORKSPACE_CONFIG",
)
# Without a deterministic CUDA kernel: these run with warn_only under --repro-deterministic (nondeterministic_allowed)
CUDA_NO_DETERMINISTIC_KERNEL = (
    "bicubic/antialiased F.interpolate backward (CV-10's resampling defence, DeepFool on the defended network): "
    "no deterministic CUDA kernel exists; it runs with warn_only and can change the last bits between runs",
)


def determinism(accel: Accel, threads: int) -> dict:
    """What the report says about repeatability on this run's device."""
    if accel.device.type != "cuda":
        return {"device": str(accel.device), "repeatable": True, "threads": threads, "nondeterministic": [],
                "statement": f"CPU with {threads} thread(s): the same seeds give identical statistics "
                             f"(tests/test_determinism.py compares two runs' report.json)."}
    if accel.deterministic:
        return {"device": str(accel.device), "repeatable": True, "threads": threads,
                "nondeterministic": list(CUDA_NO_DETERMINISTIC_KERNEL), "tf32": accel.tf32,
                "statement": "CUDA with --repro-deterministic: deterministic kernels, no cuDNN autotuning, except the "
                             "operations listed (no deterministic kernel exists; CV-10 only)."}
    return {"device": str(accel.device), "repeatable": False, "threads": threads,
            "nondeterministic": list(CUDA_NONDETERMINISTIC), "tf32": accel.tf32,
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
        # past the recompile limit dynamo would fall back to eager silently; this makes it raise into the
        # warned fallback below, so a slow run says why
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        self._compiled = torch.compile(model)
        self._failed = False
        self._called = False

    def forward(self, x):
        if not self._failed:
            if not self._called:
                self._called = True
                _COMPILE_STATE["called"] += 1
            try:
                return self._compiled(x)
            except Exception as err:  # inductor/dynamo failures: any type; eager is always correct
                self._failed = True
                _COMPILE_STATE["failed"] += 1
                warnings.warn(f"torch.compile failed on {type(self.model).__name__} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); training continues eagerly")
        return self.model(x)


def eager(model: torch.nn.Module) -> torch.nn.Module:
    """The eager module under a CompiledForward (or torch.compile's OptimizedModule): for one-off calls of another
    shape (e.g. a batch-1 probe), which would otherwise compile a graph of their own."""
    while True:
        if isinstance(model, CompiledForward):
            model = model.model
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def fast_forward(model: torch.nn.Module, accel: Accel) -> torch.nn.Module:
    """The module training and first-order attacks call: compiled on request, the model itself
    otherwise. Never hand it to code that differentiates twice (the curvature operator)."""
    return CompiledForward(model) if accel.compile else model
