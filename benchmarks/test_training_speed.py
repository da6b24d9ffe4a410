"""Training throughput of advclaims.checkpoints.training.train: standard and PGD-10 adversarial training.

Run: pytest benchmarks/ --benchmark-only --repro-threads 1

Images per second over one epoch of 512 synthetic 32x32 images (batch 128, random crop and flip as
for CIFAR-10), FLOPs per image counted by torch on one real training step, achieved FLOP/s, and on
CUDA the model FLOP utilisation against the device's bf16 dense peak (advclaims.perf). Training
runs with the suite's fast path (--repro-precision, --repro-compile; on the CPU: fp32, eager).
"""

import dataclasses

import pytest
import torch

from advclaims import perf
from advclaims.checkpoints.training import Recipe, train

TRAIN_IMAGES = 512
BATCH = 128
EPS = 8 / 255
RECIPES = {
    "standard": Recipe("standard", epochs=1, batch_size=BATCH),
    "pgd10_at": Recipe("pgd", epochs=1, batch_size=BATCH, eps=EPS, alpha=EPS / 4, attack_steps=10),
}
CIFAR10_TRAIN_IMAGES = 50_000


def forward_flops(model, device) -> int:
    with torch.no_grad():
        return perf.count_flops(lambda: model(torch.rand(1, 3, 32, 32, device=device)))


@pytest.mark.parametrize("method", RECIPES)
def test_training_throughput(benchmark, record, fresh_model, synthetic_split, device, accel, method):
    recipe = RECIPES[method]
    split, one_batch = synthetic_split(TRAIN_IMAGES), synthetic_split(BATCH)

    def epoch(on, how):
        return lambda: train(fresh_model, on, recipe, seed=0, crop_pad=4, flip=True, progress=False, accel=how,
                             cpu_threads=None)

    seconds = []
    benchmark.pedantic(lambda: seconds.append(perf.timed(epoch(split, accel), device)), rounds=3, warmup_rounds=1)
    # counted eagerly: compiling changes how the FLOPs run, not how many there are
    flops_per_image = perf.count_flops(epoch(one_batch, dataclasses.replace(accel, compile=False))) / BATCH
    images_per_second = TRAIN_IMAGES / perf.median(seconds[-3:])
    epoch_seconds = CIFAR10_TRAIN_IMAGES / images_per_second
    record(perf.Throughput(f"{method} (ResNet-18 width {fresh_model.conv1.out_channels}, batch {BATCH}, "
                           f"{accel.precision}{', compiled' if accel.compile else ''})",
                           images_per_second, round(flops_per_image), device,
                           notes={"CIFAR-10 epoch (50,000 images)": f"{epoch_seconds:.0f} s"}))
    # forward F, backward 2F (input and weight gradients); each attack step F + F (input gradient only)
    expected = (3 + 2 * recipe.attack_steps) * forward_flops(fresh_model, device)
    assert flops_per_image == pytest.approx(expected, rel=0.05), "the counted FLOPs should be the step's real work"
