"""Issue 24's device checks for scripts/gpu_check.sh, one per subcommand; each prints what it measured and exits 1
when a check fails. ``--dry`` runs the same code on the CPU at toy sizes (it checks the script, measures nothing).

    python scripts/gpu_items.py env|resume|deepfool|saliency|deterministic [--dry]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from advclaims import accel, data, models

from advclaims.checkpoints import training
from advclaims.analysis.curvature import defence, subspaces
from advclaims.attacks import deepfool

DRY = "--dry" in sys.argv
DEV = torch.device("cpu" if DRY else "cuda")


def _split(n: int, size: int = 32, channels: int = 3) -> data.Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return data.Split("synthetic", x.to(DEV), y.to(DEV))


def env() -> int:
    ok = torch.cuda.is_available()
    acc = accel.resolve(DEV, "fp32", False)
    print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "available": ok,
                      "devices": torch.cuda.device_count(), "driver": _driver(),
                      "tf32_after_resolve": accel.tf32_settings(), "accel": str(acc)}))
    return 0 if ok or DRY else 1


def _driver() -> str | None:
    try:
        import subprocess
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except Exception:
        return None


def resume() -> int:
    """Compiled bf16 ResNet-18 training with a partial last batch: stopped after epoch 1, resumed for epoch 2."""
    n, width = (300, 8) if DRY else (128 * 20 + 37, 64)
    split = _split(n)
    acc = accel.resolve(DEV, "fp32" if DRY else "bf16", not DRY)
    recipe = training.Recipe("standard", epochs=2)
    path = Path(tempfile.mkdtemp()) / "run.resume.pt"

    def net():
        torch.manual_seed(0)
        return models.build("resnet18", in_channels=3, num_classes=10, width=width).to(
            DEV, memory_format=torch.channels_last)

    class Killed(Exception):
        pass

    first = net()
    real_save = training.atomic_write

    def save_then_die(p, write):  # the state of epoch 1 is written, then the process "dies"
        real_save(p, write)
        raise Killed

    training.atomic_write = save_then_die
    try:
        training.train(first, split, recipe, seed=0, accel=acc, resume=path, progress=False)
    except Killed:
        pass
    finally:
        training.atomic_write = real_save
    start = time.perf_counter()
    metrics = training.train(net(), split, recipe, seed=0, accel=acc, resume=path, progress=False)
    print(json.dumps({"resumed_from_epoch": metrics["resumed_from_epoch"], "steps": metrics["steps"],
                      "compile": metrics.get("compile"), "seconds": round(time.perf_counter() - start, 1)}))
    return 0 if metrics["resumed_from_epoch"] == 1 else 1


def deepfool_benchmark() -> int:
    """DeepFool (its active batch shrinks every step) with cudnn.benchmark forced on, and as the attack runs it."""
    n, width = (4, 8) if DRY else (500, 64)
    torch.manual_seed(0)
    net = models.build("resnet18", in_channels=3, num_classes=10, width=width).to(DEV).eval()
    x = _split(n).images()
    import contextlib

    df = sys.modules["advclaims.attacks.deepfool"]  # the module (the package exports the function under its name)
    original = df.no_autotune
    for mode in ("attack_default", "benchmark_on"):  # the attack as it runs (autotuning off), then the old storm
        if mode == "benchmark_on":  # autotuning at every new active-batch size, as before issue 24
            df.no_autotune = contextlib.nullcontext
            torch.backends.cudnn.benchmark = True
        start = time.perf_counter()
        try:
            res = deepfool(net, x, max_iter=3 if DRY else 50)
            if DEV.type == "cuda":
                torch.cuda.synchronize()
        finally:
            df.no_autotune = original
        # one line per mode as it ends: a benchmark_on run cut by the step's time limit still leaves the first
        print(json.dumps({mode: {"seconds": round(time.perf_counter() - start, 2), "fooled": int(res.success.sum())}}),
              flush=True)
    return 0


def saliency() -> int:
    """CV-7's saliency and FGSM on 10,000 NiN images at the paper's gradient batch, peak memory on this worker."""
    if not DRY and os.environ.get("CUDA_VISIBLE_DEVICES") is None and torch.cuda.device_count() > 1:
        dev = torch.device("cuda", 1)   # as xdist worker gw1 would be pinned (options.device_of)
        torch.cuda.set_device(dev)
    else:
        dev = DEV
    n, width = (128, 8) if DRY else (10_000, 192)
    torch.manual_seed(0)
    net = models.build("nin", in_channels=3, num_classes=10, width=width).to(dev).eval()
    x = torch.rand(n, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    sal = subspaces.saliency(net, x, batch=1024)
    step = subspaces.fgsm_directions(net, x, y, eps=8 / 255, batch=1024)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    print(json.dumps({"device": str(dev), "images": n, "seconds": round(time.perf_counter() - start, 1),
                      "peak_mib": peak, "finite": bool(torch.isfinite(sal).all() and torch.isfinite(step).all())}))
    return 0


def deterministic() -> int:
    """One backward through the resampling defence under use_deterministic_algorithms(True): warns, no error."""
    accel.resolve(DEV, "fp32", False, deterministic=True)
    torch.manual_seed(0)
    net = defence.Resampled(models.build("resnet18", in_channels=3, num_classes=10, width=8).to(DEV).eval(), side=14)
    x = torch.rand(4, 3, 32, 32, device=DEV, requires_grad=True)
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (g,) = torch.autograd.grad(net(x).sum(), x)
    print(json.dumps({"finite": bool(torch.isfinite(g).all()), "warnings": [str(w.message)[:120] for w in caught]}))
    return 0 if torch.isfinite(g).all() else 1


if __name__ == "__main__":
    steps = {"env": env, "resume": resume, "deepfool": deepfool_benchmark, "saliency": saliency,
             "deterministic": deterministic}
    name = next((a for a in sys.argv[1:] if not a.startswith("--")), None)
    if name not in steps:
        sys.exit(f"usage: gpu_items.py {'|'.join(steps)} [--dry]")
    sys.exit(steps[name]())
