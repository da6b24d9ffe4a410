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
import sys
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


# The fp32 precision flags this suite sets, new API only (torch >= 2.9): once any of them is set, torch refuses to read
# the legacy allow-TF32 booleans of cuDNN and cuBLAS (a RuntimeError about mixing the two APIs, also from
# torch.backends.cudnn.flags()), so nothing here ever reads or writes those (tests/test_gpu_readiness.py checks). The cuDNN parent comes
# first: setting it also resets the leaves; inductor's Triton convolution templates read the parent.
FP32_PRECISION_FLAGS = ("cudnn", "cudnn_conv", "cudnn_rnn", "cuda_matmul")
_FP32_PRECISION_SET: dict = {}  # what set_tf32 last set in this process (empty: never set; torch's defaults hold)


def _fp32_precision_backends() -> dict:
    b = torch.backends
    return {"cudnn": b.cudnn, "cudnn_conv": b.cudnn.conv, "cudnn_rnn": b.cudnn.rnn, "cuda_matmul": b.cuda.matmul}


def set_tf32(enabled: bool) -> dict:
    """TF32 for every CUDA fp32 operation that has the choice (cuDNN convolutions and RNNs, cuBLAS matmuls) on
    (``enabled``) or off (full IEEE fp32), process-wide, through ``fp32_precision`` alone. Returns what it set (also
    kept: ``fp32_precision_set()``)."""
    mode = "tf32" if enabled else "ieee"
    for backend in _fp32_precision_backends().values():  # the cuDNN parent first: it resets the leaves
        backend.fp32_precision = mode
    _FP32_PRECISION_SET.clear()
    _FP32_PRECISION_SET.update(dict.fromkeys(FP32_PRECISION_FLAGS, mode))
    return fp32_precision_set()


def fp32_precision_set() -> dict:
    """The fp32 precisions set_tf32 last set in this process ({} when it never ran: torch's defaults hold)."""
    return dict(_FP32_PRECISION_SET)


def tf32_settings() -> dict:
    """What torch will do with CUDA fp32 convolutions, RNNs and matmuls now (for the report and gpu_check): the
    ``fp32_precision`` flags, read through the new API only."""
    return {name: backend.fp32_precision for name, backend in _fp32_precision_backends().items()}


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
    if "torch._dynamo" not in sys.modules:  # never imported in this process: nothing compiled (and no import cost)
        return {}
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


# CUDA operations this suite runs whose results can differ between identical runs, each with where it runs. Sources:
# torch.use_deterministic_algorithms' docstring (its two lists: ops made deterministic by mode=True, and ops without a
# deterministic kernel) and PyTorch's reproducibility notes (cuDNN algorithm choice, CUBLAS_WORKSPACE_CONFIG).
# tests/test_accel.py checks every torch name here against the installed torch's docstring.
# Deterministic here, so not listed: max_pool2d and avg_pool2d backward (torch lists only MaxPool3d/AvgPool3d; 2-D
# pools' backward kernels gather per input element); adaptive_avg_pool2d to 1x1 (ATen computes it as a mean);
# cross_entropy on (N, C) logits (torch flags only the 2-D-target nll_loss2d); advanced-indexing backward on CUDA
# (index_put_ with accumulate=True sorts its indices; torch lists the CPU one); scatter_add_ in HF's class sums
# (CPU tensors); data augmentation and bilinear proxy resizing (never differentiated).
CUDA_NONDETERMINISTIC = (
    "torch.nn.Conv2d (cuDNN convolutions, every model): the algorithm cudnn.benchmark picks can change between runs, "
    "and some backward (input and weight gradient) algorithms accumulate with atomics",
    "torch.gather backward (a scatter_add_ with atomics): margin and DeepFool losses, the curvature operator, "
    "saliency; with one index per row, as here, each element gets a single add",
    "torch.index_add (atomic float adds): HF-3's per-class feature sums (expectations.one_split_ratios)",
    "torch.nn.functional.interpolate backward, bicubic and antialiased (CV-10's resampling defence): atomic adds",
    "cuBLAS matmuls (linear layers, the curvature and subspace products): reductions can differ between runs unless "
    "CUBLAS_WORKSPACE_CONFIG is set (:4096:8), as --repro-deterministic does",
)
# Without a deterministic CUDA kernel: these run with warn_only under --repro-deterministic (nondeterministic_allowed)
CUDA_NO_DETERMINISTIC_KERNEL = (
    "torch.nn.functional.interpolate backward, bicubic and antialiased (CV-10's resampling defence, DeepFool on the "
    "defended network): no deterministic CUDA kernel exists; it runs with warn_only and can change the last bits "
    "between runs",
)


def determinism(accel: Accel, threads: int) -> dict:
    """What the report says about repeatability on this run's device, with the fp32 precision set on CUDA and the
    run's torch.compile counters (this process's and the xdist workers' ``note_worker_compile``) when it compiled."""
    out = _determinism(accel, threads)
    if accel.device.type == "cuda":
        out["fp32_precision"] = fp32_precision_set() or tf32_settings()
    compiled = run_compile_counters()
    if accel.compile or any(compiled.get(k) for k in ("frames_total", "compiled_forwards", "eager_fallbacks")):
        out["compile"] = compiled
    return out


def _determinism(accel: Accel, threads: int) -> dict:
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


_WORKER_COMPILE: dict = {}  # xdist worker id -> its latest compile_counters() (cumulative in that worker)
_SUMMED = ("frames_ok", "frames_total", "unique_graphs", "graph_breaks", "compiled_forwards", "eager_fallbacks",
           "recompiles")


def note_worker_compile(worker: str, counters: dict) -> None:
    """The controller's side: a worker's compile_counters() as it sent them (cumulative: the latest replaces)."""
    if counters:
        _WORKER_COMPILE[worker] = dict(counters)


def run_compile_counters() -> dict:
    """The run's torch.compile counters: this process's plus every xdist worker's latest, summed (recompiles None
    when any process had graph breaks, where frames beyond one per compiled forward are not recompiles), and the
    number of processes they come from."""
    parts = [c for c in (compile_counters(), *_WORKER_COMPILE.values()) if any(c.get(k) for k in _SUMMED)]
    if not parts:
        return {}
    total = {k: sum(int(p.get(k) or 0) for p in parts) for k in _SUMMED}
    if any(p.get("recompiles") is None for p in parts):
        total["recompiles"] = None
    total["processes"] = len(parts)
    return total


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
