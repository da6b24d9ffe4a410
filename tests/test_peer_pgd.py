"""Our PGD and FGSM against torchattacks' on one small trained CNN: robust accuracies must agree.

The model is a narrow LeNet trained for a few seconds on Fashion-MNIST (synthetic templates when
the dataset is absent). Both PGDs start from the same uniform noise (our generator and torch's
global RNG seeded alike), so a disagreement points at the update, projection or clipping.
"""

from __future__ import annotations

import pytest
import torch

from advclaims import data, models
from advclaims.attacks import fgsm, pgd

torchattacks = pytest.importorskip("torchattacks")

N_TEST = 512
TOLERANCE = 0.02  # two accuracy points
EPS, ALPHA, STEPS = 0.03, 0.0075, 10  # small enough that robust accuracy stays away from 0
SEED = 1234


def synthetic_fashion(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten noisy 28x28 templates, a stand-in with Fashion-MNIST's shapes."""
    templates = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    return (templates[y] + 0.5 * torch.randn(n, 1, 28, 28, generator=g)).clamp(0, 1), y


def fashion_or_synthetic() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        train = data.load("fashion_mnist", "train").subset(10_000, seed=0)
        test = data.load("fashion_mnist", "test").head(N_TEST)
    except data.DatasetMissing:
        return (*synthetic_fashion(10_000, seed=1), *synthetic_fashion(N_TEST, seed=2))
    return train.images(), train.y, test.images(), test.y


@pytest.fixture(scope="module")
def trained_lenet():
    x_train, y_train, x_test, y_test = fashion_or_synthetic()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = models.build("lenet", in_channels=1, num_classes=10, width=4, input_size=28)
        order = torch.randperm(len(y_train))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(2):
        for batch in order.split(128):
            loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model, x_test, y_test


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_the_peer_model_learnt_enough_for_attacks_to_matter(trained_lenet):
    model, x, y = trained_lenet
    assert accuracy(model, x, y) > 0.7


def test_pgd_robust_accuracy_matches_torchattacks_within_two_points(trained_lenet):
    model, x, y = trained_lenet
    ours = accuracy(model, pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=STEPS,
                               generator=torch.Generator().manual_seed(SEED)), y)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        theirs = accuracy(model, torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)(x, y), y)
    assert theirs < accuracy(model, x, y) - 0.05, "the budget should bite, or agreeing proves little"
    assert abs(ours - theirs) <= TOLERANCE, f"robust accuracy: ours {ours:.3f}, torchattacks {theirs:.3f}"


def test_fgsm_robust_accuracy_matches_torchattacks_within_two_points(trained_lenet):
    model, x, y = trained_lenet
    ours = accuracy(model, fgsm(model, x, y, eps=EPS), y)
    theirs = accuracy(model, torchattacks.FGSM(model, eps=EPS)(x, y), y)
    assert theirs < accuracy(model, x, y) - 0.05, "the budget should bite, or agreeing proves little"
    assert abs(ours - theirs) <= TOLERANCE, f"robust accuracy: ours {ours:.3f}, torchattacks {theirs:.3f}"
