"""PGD-20 and FGSM throughput, ours next to torchattacks on the same model, batch and budget.

Run: pytest benchmarks/ --benchmark-only   (needs the test extra: pip install -e ".[test]")
"""

import pytest

from advclaims.attacks import fgsm, pgd

torchattacks = pytest.importorskip("torchattacks")

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 20


def test_pgd20_advclaims(benchmark, model_and_batch):
    net, x, y = model_and_batch
    benchmark.group = "pgd20"
    benchmark.pedantic(lambda: pgd(net, x, y, eps=EPS, alpha=ALPHA, steps=STEPS), rounds=3, warmup_rounds=1)


def test_pgd20_torchattacks(benchmark, model_and_batch):
    net, x, y = model_and_batch
    benchmark.group = "pgd20"
    attack = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    benchmark.pedantic(lambda: attack(x, y), rounds=3, warmup_rounds=1)


def test_fgsm_advclaims(benchmark, model_and_batch):
    net, x, y = model_and_batch
    benchmark.group = "fgsm"
    benchmark.pedantic(lambda: fgsm(net, x, y, eps=EPS), rounds=5, warmup_rounds=1)


def test_fgsm_torchattacks(benchmark, model_and_batch):
    net, x, y = model_and_batch
    benchmark.group = "fgsm"
    attack = torchattacks.FGSM(net, eps=EPS)
    benchmark.pedantic(lambda: attack(x, y), rounds=5, warmup_rounds=1)
