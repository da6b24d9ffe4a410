"""Seconds per attack step (forward + input gradient) for each rewrite of attacks' fast_model, per model.

Run: .venv/bin/python benchmarks/step_breakdown.py [--threads 1] [--rounds 5] [--batch 128] [--profile]

Four forwards of the same frozen model, timed interleaved round by round (medians printed):
plain (the model as built), channels_last (inputs in NHWC), folded (BatchNorm folded into its
conv), fast (both: what the attacks run on the CPU). Every model is seeded and its BatchNorm
statistics randomised, so the folding is not a no-op. ``--profile`` prints instead torch.profiler's
table of one PGD-20 call on the first model (ResNet-18 width 8), where the time goes after the rewrites.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from advclaims import models, perf
from advclaims.attacks import frozen, input_gradient, pgd
from advclaims.attacks._common import cross_entropy_loss
from advclaims.attacks.fastpath import FastForward, fast_model

# the narrow nets of the smoke budget: (name, in_channels, width, image side)
MODELS = [("resnet18", 3, 8, 32), ("preact_resnet18", 3, 8, 32), ("vgg16_bn", 3, 8, 32), ("wrn28_10", 3, 1, 32),
          ("lenet", 1, 8, 28)]


def variants(model: nn.Module, x: torch.Tensor) -> dict[str, nn.Module]:
    fast = fast_model(model, x)
    folded = fast.body if isinstance(fast, FastForward) else model
    return {"plain": model, "channels_last": FastForward(model, torch.channels_last),
            "folded": FastForward(folded, torch.preserve_format), "fast": fast}


def seeded(name: str, channels: int, width: int, side: int, batch: int):
    """The model (eval mode, BatchNorm statistics randomised), a batch of images and labels."""
    torch.manual_seed(0)
    model = models.build(name, in_channels=channels, num_classes=10, width=width, input_size=side).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model, torch.rand(batch, channels, side, side), torch.randint(0, 10, (batch,))


def breakdown(name: str, channels: int, width: int, side: int, batch: int, rounds: int) -> dict[str, float]:
    model, x, y = seeded(name, channels, width, side, batch)
    seconds: dict[str, list[float]] = {}
    with frozen(model):
        forwards = variants(model, x)
        for _ in range(rounds + 1):  # the first round warms up
            for label, forward in forwards.items():
                seconds.setdefault(label, []).append(
                    perf.timed(lambda: input_gradient(forward, x, y, cross_entropy_loss), x.device))
    return {label: perf.median(s[1:]) for label, s in seconds.items()}


def profile_pgd(batch: int) -> None:
    model, x, y = seeded(*MODELS[0], batch)
    pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=2)  # builds fast_model's cache outside the profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=20)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--profile", action="store_true", help="profile one PGD-20 call on ResNet-18 width 8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.profile:
        profile_pgd(args.batch)
        return
    print(f"ms per step (forward + input gradient), batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'model':<24} {'plain':>8} {'ch_last':>8} {'folded':>8} {'fast':>8} {'speedup':>8}")
    for name, channels, width, side in MODELS:
        ms = {k: 1000 * v for k, v in breakdown(name, channels, width, side, args.batch, args.rounds).items()}
        print(f"{f'{name} w{width} {channels}x{side}x{side}':<24} {ms['plain']:>8.1f} {ms['channels_last']:>8.1f} "
              f"{ms['folded']:>8.1f} {ms['fast']:>8.1f} {ms['plain'] / ms['fast']:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
