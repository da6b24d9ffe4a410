"""Training recipes: standard, PGD adversarial training (Madry et al.) and FGSM-RS (Wong et al.).

A recipe reads top to bottom: every hyperparameter sits in ``Recipe`` with its unit in a comment,
the loop holds the data as tensors on the model's device and augments them there.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from advclaims import accel as accel_mod
from advclaims import data as data_mod
from advclaims.checkpoints import distributed
from advclaims.checkpoints.atomic import atomic_write
from advclaims.attacks._common import check_attack_inputs, check_finite_flag, finite_flag, frozen
from advclaims.attacks.pgd import pgd_from
from advclaims.budgets import Recipe
from advclaims.checkpoints.health import loss_window

class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the message names the epoch and the recipe to change."""


RESUME_FORMAT = 2  # layout of the per-epoch resume state; a state of another layout is ignored


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _device_generator(device: torch.device, seed: int, g: torch.Generator) -> torch.Generator:
    """The generator of the random numbers a training step draws (shuffle, augmentation, PGD's random start).

    On the CPU it is ``g`` itself (the numbers of every stored CPU model stay as they were); on CUDA a generator
    on the device, so that no step draws on the host and copies in (a host sync each)."""
    if device.type != "cuda":
        return g
    return torch.Generator(device=device).manual_seed(seed)


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _load_resume(path: Path | None, identity: dict, device: torch.device) -> dict | None:
    """The resume state at ``path`` if it belongs to this training run, else None (with a warning
    when a file is there but unusable: it is then ignored and training starts over)."""
    if path is None or not path.exists():
        return None
    try:
        # on the CPU whatever the training device: generator states must stay CPU ByteTensors (set_state,
        # set_rng_state and cuda.set_rng_state refuse others); load_state_dict moves weights to the model's device
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file: start over rather than trust it
        warnings.warn(f"ignoring resume state {path.name}: it does not load ({type(err).__name__}); "
                      f"training starts from epoch 1")
        return None
    if state.get("identity") != identity:
        warnings.warn(f"ignoring resume state {path.name}: it belongs to another recipe, seed or world size")
        return None
    return state


# CPU training runs on this many intra-op threads whatever the caller set: the float reduction order of a
# convolution's backward depends on the thread count, and over a few hundred SGD steps that difference grows into
# another model (measured: smoke LeNet on Fashion-MNIST, 1 thread against 2, different weights; the same thread
# count, the same weights bit for bit). A spec in the store must mean one set of weights on a machine, whichever
# test, worker or subprocess trains it; CPU parallelism comes from xdist workers, one model each.
TRAIN_CPU_THREADS = 1


def train(model: torch.nn.Module, split: data_mod.Split, recipe: Recipe, *, seed: int, crop_pad: int = 0,
          flip: bool = False, progress: bool = True, desc: str = "train", accel: accel_mod.Accel | None = None,
          resume: str | Path | None = None, cpu_threads: int | None = TRAIN_CPU_THREADS) -> dict:
    """Train ``model`` in place on ``split`` (already on the model's device). Returns training metrics.

    On the CPU it runs on ``cpu_threads`` intra-op threads (default TRAIN_CPU_THREADS, so that the weights do
    not depend on the caller's thread count; None: the caller's), restored afterwards.
    """
    if split.device.type != "cpu" or cpu_threads is None:
        return _train(model, split, recipe, seed=seed, crop_pad=crop_pad, flip=flip, progress=progress, desc=desc,
                      accel=accel, resume=resume)
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads)
    try:
        metrics = _train(model, split, recipe, seed=seed, crop_pad=crop_pad, flip=flip, progress=progress,
                         desc=desc, accel=accel, resume=resume)
    finally:
        torch.set_num_threads(before)
    metrics["cpu_threads"] = cpu_threads
    return metrics


def _train(model: torch.nn.Module, split: data_mod.Split, recipe: Recipe, *, seed: int, crop_pad: int, flip: bool,
           progress: bool, desc: str, accel: accel_mod.Accel | None, resume: Path | str | None) -> dict:
    """train()'s body on the threads the caller set.

    ``resume``: a file for the state after each epoch (weights, optimiser, random generators,
    history). When it exists and belongs to this run, training continues from it, so a killed run
    loses at most the epoch in progress, and the result equals an uninterrupted run's bit for bit
    on the CPU. Under torchrun (torch.distributed initialised) every rank takes its slice of each
    batch and DistributedDataParallel averages the gradients; rank 0 writes the resume state.
    """
    device = split.device
    accel = accel or accel_mod.resolve(device, "fp32", False)
    rank, world = distributed.world()
    resume = Path(resume) if resume is not None else None
    g = torch.Generator().manual_seed(seed)
    gd = _device_generator(device, seed, g)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=False)
    # compiled: the partial last batch is dropped (a second shape would recompile every compiled graph); compile is
    # in the store key (Pipeline.spec_of), so this changes only compiled models. Eager keeps every image.
    drop_last = accel.compile and len(split) > recipe.batch_size
    steps_per_epoch = (len(split) // recipe.batch_size if drop_last else math.ceil(len(split) / recipe.batch_size))
    total = recipe.epochs * steps_per_epoch
    identity = {"recipe": recipe.as_dict(), "seed": seed, "world": world, "precision": accel.precision,
                "images": len(split), "format": RESUME_FORMAT}
    step, first_epoch, history, spent, losses = 0, 0, [], 0.0, []
    state = _load_resume(resume, identity, device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        if gd is not g and "device_generator" in state:
            gd.set_state(state["device_generator"])
        _set_rng_state(state["rng"], device)
        step, first_epoch, history, spent = state["step"], state["epoch"], list(state["history"]), state["seconds"]
        losses = list(state.get("losses", []))
    if world > 1 and device.type == "cuda":
        # BatchNorm statistics over the whole batch, as in a single process: a DDP-trained model is then the
        # model its store key names (same batches, same randoms, same statistics), up to reduction order.
        # gloo (CPU) has no SyncBatchNorm: there the key carries the world size (Pipeline.spec_of).
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root; parameters are the same
    compiled_before = accel_mod.compile_counters() if accel.compile else None
    fast = accel_mod.fast_forward(model, accel)  # the attack's forward too: 10 of PGD-10 AT's 11 passes
    net = fast
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(fast, device_ids=[device] if device.type == "cuda" else None)
    start = time.perf_counter()
    bar = tqdm(range(first_epoch, recipe.epochs), desc=desc, disable=not progress or rank != 0, leave=False,
               initial=first_epoch, total=recipe.epochs)
    inputs_checked = False
    for epoch in bar:
        model.train()
        # metrics stay on the device during the epoch and are read once at its end: no host sync per step; so does
        # the attack's logits check (finite: every PGD step's, and-ed on the device)
        step_losses, sizes, correct = [], [], torch.zeros((), dtype=torch.long, device=device)
        finite = finite_flag(device)
        for x, y in split.batches(recipe.batch_size, shuffle=True, generator=gd):
            if drop_last and len(y) < recipe.batch_size:
                continue
            if recipe.augment:
                x = data_mod.augment(x, pad=crop_pad, flip=flip, generator=gd)
            noise = None
            if recipe.method != "standard":
                # drawn for the whole batch on every rank, as pgd's random start would draw it,
                # so the generator stays in step across ranks and a single process is unchanged
                noise = torch.empty(x.shape, dtype=x.dtype, device=gd.device).uniform_(-recipe.eps, recipe.eps,
                                                                                       generator=gd)
            batch = len(y)
            if world > 1:
                if len(y) < world:
                    continue  # a last batch too small to give every rank an image: skipped by all
                x, y = x[rank::world], y[rank::world]
                noise = noise[rank::world] if noise is not None else None
            if noise is not None:
                if not inputs_checked:  # once per training (host syncs): pixels in [0, 1], labels in the model's range
                    with frozen(model):
                        check_attack_inputs(model, x, y)
                    inputs_checked = True
                with accel.autocast():
                    x, ok = pgd_from(fast, x, y, eps=recipe.eps, alpha=recipe.alpha, steps=recipe.attack_steps,
                                     init=noise.to(x.device))
                finite &= ok
                model.train()
            x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = recipe.lr_at(step / total)
            with accel.autocast():
                logits = net(x)
                if world > 1:  # DDP averages over ranks: a rank's sum over the whole batch's size, times the world,
                    loss = F.cross_entropy(logits.float(), y, reduction="sum") * (world / batch)  # is the batch mean
                else:
                    loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            step_losses.append(loss.detach())
            sizes.append(len(y))
            correct += (logits.argmax(1) == y).sum()
        check_finite_flag(finite)  # NonFiniteLogits, as the attack's own check per step raised it before
        epoch_losses = torch.stack(step_losses).tolist() if step_losses else []
        bad = next((v for v in epoch_losses if not math.isfinite(v)), None)
        if bad is not None:
            raise TrainingDiverged(
                f"{desc}: loss became {bad} in epoch {epoch + 1}; lower the recipe's lr "
                f"(now {recipe.lr}) or check the data for NaN"
            )
        losses += epoch_losses
        loss_sum = sum(v * n for v, n in zip(epoch_losses, sizes))
        seen = max(1, sum(sizes))
        correct = int(correct)
        history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_accuracy": correct / seen})
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if resume is not None and rank == 0:
            seconds = spent + time.perf_counter() - start
            payload = {"identity": identity, "model": model.state_dict(), "optimizer": opt.state_dict(),
                       "generator": g.get_state(), "rng": _rng_state(device), "epoch": epoch + 1, "step": step,
                       "history": history, "seconds": seconds, "losses": losses}
            if gd is not g:
                payload["device_generator"] = gd.get_state()
            atomic_write(resume, lambda tmp: torch.save(payload, tmp))
    model.eval()
    first, last = loss_window(losses)
    metrics = {"history": history, "train_seconds": spent + time.perf_counter() - start, "steps": step,
               "resumed_from_epoch": first_epoch, "world_size": world, "precision": accel.precision,
               "loss_first_steps": first, "loss_last_steps": last}
    if accel.compile:
        metrics["compile"] = accel_mod.compile_since(compiled_before)  # this training's graphs, recompiles, fallbacks
    return metrics
