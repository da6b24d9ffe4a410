"""Issue 24's device checks for scripts/gpu_check.sh, one per subcommand; each prints what it measured and exits 1
when a check fails. ``--dry`` runs the same code on the CPU at toy sizes (it checks the script, measures nothing;
torch.compile then uses its eager backend: no C compiler needed, the counters still count).

    python scripts/gpu_items.py env|resume|deepfool|saliency|deterministic|linalg [--dry]
    torchrun --standalone --nproc_per_node 2 scripts/gpu_items.py ddp [--dry]   (gloo on the CPU below 2 GPUs)
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from advclaims import accel, data, models

from advclaims.checkpoints import distributed, training
from advclaims.analysis.curvature import defence, subspaces
from advclaims.attacks import deepfool

DRY = "--dry" in sys.argv
DEV = torch.device("cpu" if DRY else "cuda")
if DRY:  # no C compiler needed for the dry run: dynamo's eager backend (graphs, recompiles and counters as on CUDA)
    torch.compile = functools.partial(torch.compile, backend="eager")


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


RESUME_EPOCHS = 3


def _resume_run(path: Path) -> dict:
    """Compiled (bf16 on CUDA) ResNet-18 training with a partial last batch, resuming from ``path`` when it holds a
    state of this run."""
    n, width = (300, 4) if DRY else (128 * 20 + 37, 64)
    split = _split(n)
    acc = accel.resolve(DEV, "fp32" if DRY else "bf16", True)
    torch.manual_seed(0)
    net = models.build("resnet18", in_channels=3, num_classes=10, width=width).to(DEV, memory_format=torch.channels_last)
    return training.train(net, split, training.Recipe("standard", epochs=RESUME_EPOCHS), seed=0, accel=acc,
                          resume=path, progress=False)


def resume_child() -> int:
    _resume_run(Path(sys.argv[2]))
    return 0


def resume() -> int:
    """The training above in a child process, SIGKILLed as soon as the state of epoch 1 is on disk, then run again
    here: it must resume (from epoch 1, or 2 had that one ended before the kill), not start over, and compile no
    second graph (the partial last batch is dropped)."""
    path = Path(tempfile.mkdtemp()) / "run.resume.pt"
    child = subprocess.Popen([sys.executable, __file__, "resume_child", str(path)] + (["--dry"] if DRY else []))
    while not path.exists():
        if child.poll() is not None:
            print(json.dumps({"error": f"the child ended (rc {child.returncode}) before the state of epoch 1"}))
            return 1
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    start = time.perf_counter()
    metrics = _resume_run(path)
    compiled = metrics.get("compile") or {}
    out = {"child_rc": child.returncode, "resumed_from_epoch": metrics["resumed_from_epoch"], "steps": metrics["steps"],
           "compile": compiled, "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(out))
    ok = (child.returncode == -signal.SIGKILL and 1 <= metrics["resumed_from_epoch"] < RESUME_EPOCHS
          and compiled.get("recompiles") == 0 and compiled.get("eager_fallbacks") == 0)
    return 0 if ok else 1


def _sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def deepfool_benchmark() -> int:
    """DeepFool (its active batch shrinks every step) as the attack runs it (cuDNN autotuning off) and with
    cudnn.benchmark forced on, each after a warm-up at the full batch (CUDA context, cuDNN handles, lazy modules,
    and the full batch's autotuning: what is left in the timing is the per-size re-tuning)."""
    n, width, steps = (8, 4, 3) if DRY else (500, 64, 50)
    torch.manual_seed(0)
    net = models.build("resnet18", in_channels=3, num_classes=10, width=width).to(DEV).eval()
    x = _split(n).images()
    import contextlib

    df = sys.modules["advclaims.attacks.deepfool"]  # the module (the package exports the function under its name)
    original, before = df.no_autotune, torch.backends.cudnn.benchmark
    try:
        for mode in ("attack_default", "benchmark_on"):  # the attack as it runs (autotuning off), then the old storm
            if mode == "benchmark_on":  # autotuning at every new active-batch size, as before issue 24
                df.no_autotune = contextlib.nullcontext
                torch.backends.cudnn.benchmark = True
            deepfool(net, x, max_iter=1)  # warm-up: the full batch only
            _sync()
            start = time.perf_counter()
            res = deepfool(net, x, max_iter=steps)
            _sync()
            # one line per mode as it ends: a benchmark_on run cut by the step's time limit still leaves the first
            print(json.dumps({mode: {"seconds": round(time.perf_counter() - start, 2),
                                     "fooled": int(res.success.sum()), "iterations": int(res.iterations.max())}}),
                  flush=True)
    finally:
        df.no_autotune, torch.backends.cudnn.benchmark = original, before
    return 0


def saliency() -> int:
    """CV-7's saliency and FGSM on 10,000 NiN images at the paper's gradient batch on xdist worker gw1's device, set
    the way the plugin sets it (options.worker_device: gw1 -> GPU 1 mod the GPU count, made current), with the
    peak memory the preflight would read there."""
    from advclaims.plugin.options import worker_device

    dev = worker_device(DEV, "gw1")
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
    current = torch.cuda.current_device() if dev.type == "cuda" else None
    finite = bool(torch.isfinite(sal).all() and torch.isfinite(step).all())
    print(json.dumps({"device": str(dev), "current_device": current, "images": n, "peak_mib": peak, "finite": finite,
                      "on_device": sal.device == dev and step.device == dev,
                      "seconds": round(time.perf_counter() - start, 1)}))
    pinned = dev.type == DEV.type and (dev.type != "cuda" or (dev.index == 1 % torch.cuda.device_count()
                                                              and current == dev.index))
    return 0 if finite and pinned and sal.device == dev and step.device == dev else 1


def deterministic() -> int:
    """One backward through the resampling defence under use_deterministic_algorithms(True): no error, and on CUDA
    the warning torch gives for the bicubic backward that has no deterministic kernel (warn_only there); the CPU's
    kernel is deterministic, so there it gives none."""
    accel.resolve(DEV, "fp32", False, deterministic=True)
    torch.manual_seed(0)
    net = defence.Resampled(models.build("resnet18", in_channels=3, num_classes=10, width=8).to(DEV).eval(), side=14)
    x = torch.rand(4, 3, 32, 32, device=DEV, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (g,) = torch.autograd.grad(net(x).sum(), x)
    said = [str(w.message) for w in caught if "does not have a deterministic implementation" in str(w.message)]
    print(json.dumps({"finite": bool(torch.isfinite(g).all()), "deterministic_warnings": [m[:160] for m in said],
                      "other_warnings": [str(w.message)[:120] for w in caught if str(w.message) not in said]}))
    warned = bool(said) and all("upsample_bicubic2d" in m for m in said)
    return 0 if torch.isfinite(g).all() and warned == (DEV.type == "cuda") else 1


def linalg() -> int:
    """Algorithm 1 on a small net on the device: the float64 decomposition runs there (eigh's input is on it) and
    agrees with the CPU's."""
    from advclaims.analysis.curvature import operator as cv
    from advclaims.budgets import CurvatureSizes

    seen, real = [], torch.linalg.eigh
    torch.linalg.eigh = lambda a, *args, **kw: seen.append(str(a.device)) or real(a, *args, **kw)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 64, 3)).double().eval()
    x = torch.rand(60, 1, 8, 8, dtype=torch.float64)
    settings = CurvatureSizes(4, 1, 1, dense_limit=1024, batch=512)
    here = cv.class_curvature(net.to(DEV), x.to(DEV), 0, h=0.05, settings=settings)
    cpu = cv.class_curvature(net.cpu(), x, 0, h=0.05, settings=settings)
    torch.linalg.eigh = real
    close = torch.allclose(here.curvatures.double(), cpu.curvatures.double(), rtol=1e-4, atol=1e-6)
    print(json.dumps({"eigh_on": seen[:1], "curvatures_close": close, "result_device": str(here.curvatures.device)}))
    return 0 if close and seen and seen[0].startswith(DEV.type) and here.curvatures.device.type == "cpu" else 1


def ddp() -> int:
    """Run by torchrun with 2 processes: a short epoch of a narrow ResNet-18 under DistributedDataParallel, on two
    GPUs (NCCL, SyncBatchNorm) where there are two, else on the CPU with gloo. Every rank must see world size 2 and
    end with the same parameters."""
    dev = torch.device("cuda" if not DRY and torch.cuda.device_count() >= 2 else "cpu")
    dev = distributed.setup(dev)
    rank, world = distributed.world()
    try:
        g = torch.Generator().manual_seed(0)
        n = 160 if DRY else 128 * 8 + 37
        split = data.Split("synthetic", torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8).to(dev),
                           torch.randint(0, 10, (n,), generator=g).to(dev))
        torch.manual_seed(0)
        net = models.build("resnet18", in_channels=3, num_classes=10, width=4).to(dev)
        metrics = training.train(net, split, training.Recipe("standard", epochs=1, augment=False), seed=0,
                                 accel=accel.resolve(dev, "fp32", False), progress=False)
        flat = torch.cat([p.detach().flatten() for p in net.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(world)]
        torch.distributed.all_gather(gathered, flat)
        same = all(torch.equal(t, gathered[0]) for t in gathered)
        sync_bn = any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
        if rank == 0:
            print(json.dumps({"world": world, "backend": torch.distributed.get_backend(), "device": str(dev),
                              "world_size_trained": metrics["world_size"], "steps": metrics["steps"],
                              "parameters_equal_on_ranks": same, "sync_batchnorm": sync_bn}))
        return 0 if world == 2 and metrics["world_size"] == 2 and same and sync_bn == (dev.type == "cuda") else 1
    finally:
        distributed.teardown()


if __name__ == "__main__":
    steps = {"env": env, "resume": resume, "resume_child": resume_child, "deepfool": deepfool_benchmark,
             "saliency": saliency, "deterministic": deterministic, "linalg": linalg, "ddp": ddp}
    name = next((a for a in sys.argv[1:] if not a.startswith("--")), None)
    if name not in steps:
        sys.exit(f"usage: gpu_items.py {'|'.join(steps)} [--dry]")
    sys.exit(steps[name]())
