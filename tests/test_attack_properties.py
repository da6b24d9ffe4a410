"""Property tests of the attack library: invariants that must hold for any shape, budget and seed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advclaims.attacks import bim, cw_l2, deepfool, fgsm, margin_loss, pgd, universal_perturbation
from advclaims.models import Normalize

NUM_CLASSES = 5
PIXEL_ATOL = 1e-6  # float rounding of x + delta - x


def examples(n: int) -> int:
    """n examples under hypothesis' default profile (100), proportionally fewer under 'ci'."""
    return max(3, n * settings.default.max_examples // 100)


# ---------------------------------------------------------------------------------------------
# hypothesis strategies (named once)

batch_sizes = st.integers(1, 4)
channel_counts = st.sampled_from([1, 3])
sides = st.integers(4, 9)
seeds = st.integers(0, 2**31 - 1)
eps_values = st.floats(0.0, 0.5, allow_nan=False, allow_infinity=False)
positive_eps = st.floats(1e-3, 0.5, allow_nan=False, allow_infinity=False)
negative_numbers = st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False, min_value=-1e6)
out_of_range_pixels = st.floats(1 + 1e-4, 10.0) | st.floats(-10.0, -1e-4)
robust_eps = st.floats(0.04, 0.16)  # where this task's robust accuracy falls from ~1 to ~0
pgd_step_counts = st.sampled_from([1, 2, 5, 10, 20])
linf_attack_names = st.sampled_from(["fgsm", "pgd", "bim"])
eps_attack_names = st.sampled_from(["fgsm", "pgd", "bim", "universal"])
all_attack_names = st.sampled_from(["fgsm", "pgd", "bim", "cw", "deepfool", "universal"])
cw_weights = st.sampled_from([0.5, 5.0])
requires_grad_flags = st.lists(st.booleans(), min_size=6, max_size=6)  # one per parameter of tiny_net


@st.composite
def image_batches(draw, dtype=torch.float32):
    """(x, y): pixels in [0, 1] with some exactly at 0 or 1 (where clamping bites), random labels."""
    shape = (draw(batch_sizes), draw(channel_counts), draw(sides), draw(sides))
    g = torch.Generator().manual_seed(draw(seeds))
    x = torch.rand(shape, generator=g, dtype=dtype)
    edge = torch.rand(shape, generator=g)
    x = torch.where(edge < 0.1, 0.0, torch.where(edge > 0.9, 1.0, x)).to(dtype)
    y = torch.randint(0, NUM_CLASSES, (shape[0],), generator=g)
    return x, y


# ---------------------------------------------------------------------------------------------
# models

_MODELS: dict[tuple[int, torch.dtype], nn.Module] = {}


def tiny_net(channels: int, dtype=torch.float32) -> nn.Module:
    """Seeded conv net for any image size >= 4; BatchNorm and Dropout make eval mode observable."""
    key = (channels, dtype)
    if key not in _MODELS:
        with torch.random.fork_rng():
            torch.manual_seed(channels)
            net = nn.Sequential(
                Normalize((0.5,) * channels, (0.25,) * channels), nn.Conv2d(channels, 8, 3, padding=1),
                nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                nn.Linear(128, NUM_CLASSES),
            )
            net[2].running_mean.uniform_(-0.2, 0.2)  # non-trivial eval statistics
            net[2].running_var.uniform_(0.5, 2.0)
        _MODELS[key] = net.to(dtype).eval()
    return _MODELS[key]


def run_linf(name, model, x, y, *, eps, seed=0, targeted=False, steps=3):
    alpha = max(eps / 4, 1e-3)
    if name == "fgsm":
        return fgsm(model, x, y, eps=eps, targeted=targeted)
    if name == "pgd":
        return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, targeted=targeted,
                   generator=torch.Generator().manual_seed(seed))
    return bim(model, x, y, eps=eps, alpha=alpha, steps=steps, targeted=targeted)


def run_any(name, model, x, y, *, eps=0.1):
    if name in ("fgsm", "pgd", "bim"):
        return run_linf(name, model, x, y, eps=eps)
    if name == "cw":
        return cw_l2(model, x, y, c=1.0, steps=3)
    if name == "deepfool":
        return deepfool(model, x, y=y, max_iter=3)
    return universal_perturbation(model, x, eps=eps, max_passes=1, deepfool_steps=2)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def separable_task():
    """A tiny MLP trained to ~100% clean accuracy on 4 noisy 8x8 templates; returns (model, x_test, y_test)."""
    g = torch.Generator().manual_seed(0)
    templates = 0.25 + 0.5 * torch.rand(4, 1, 8, 8, generator=g)

    def sample(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return (templates[y] + 0.15 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1), y

    x_train, y_train = sample(1024)
    x_test, y_test = sample(300)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x_train), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert accuracy(model, x_test, y_test) > 0.95, "the synthetic task should be learnt before it is attacked"
    return model, x_test, y_test


ACCURACY_NOISE = 0.03  # 9 of 300 test images: slack for a random start landing luckily


# ---------------------------------------------------------------------------------------------
# L-inf attacks: budget and range


@settings(deadline=None, max_examples=examples(40))
@given(name=linf_attack_names, batch=image_batches(), eps=eps_values, seed=seeds, targeted=st.booleans())
def test_linf_attacks_stay_in_the_eps_ball_and_in_pixel_range(name, batch, eps, seed, targeted):
    x, y = batch
    x_adv = run_linf(name, tiny_net(x.shape[1]), x, y, eps=eps, seed=seed, targeted=targeted)
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + PIXEL_ATOL
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@settings(deadline=None, max_examples=examples(20))
@given(name=linf_attack_names, batch=image_batches(), seed=seeds)
def test_linf_attacks_with_eps_zero_return_x_exactly(name, batch, seed):
    x, y = batch
    assert torch.equal(run_linf(name, tiny_net(x.shape[1]), x, y, eps=0.0, seed=seed), x)


@settings(deadline=None, max_examples=examples(30))
@given(batch=image_batches(), eps=positive_eps, targeted=st.booleans())
def test_fgsm_without_clipping_moves_every_pixel_by_exactly_eps_or_zero(batch, eps, targeted):
    x, y = batch
    moved = (fgsm(tiny_net(x.shape[1]), x, y, eps=eps, targeted=targeted, clip=False) - x).abs()
    assert torch.all(((moved - eps).abs() <= PIXEL_ATOL) | (moved == 0))
    assert (moved > 0).any(), "a random conv net has non-zero input gradients"


# ---------------------------------------------------------------------------------------------
# stronger is not weaker


@settings(deadline=None, max_examples=examples(15))
@given(eps=robust_eps, seed=seeds)
def test_pgd_is_never_weaker_than_fgsm_beyond_noise(separable_task, eps, seed):
    model, x, y = separable_task
    x_pgd = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10, generator=torch.Generator().manual_seed(seed))
    assert accuracy(model, x_pgd, y) <= accuracy(model, fgsm(model, x, y, eps=eps), y) + ACCURACY_NOISE


@settings(deadline=None, max_examples=examples(15))
@given(eps=robust_eps, fewer=pgd_step_counts, more=pgd_step_counts, seed=seeds)
def test_more_pgd_steps_never_raise_accuracy_beyond_noise(separable_task, eps, fewer, more, seed):
    fewer, more = sorted((fewer, more))
    model, x, y = separable_task

    def robust_accuracy(steps):
        x_adv = pgd(model, x, y, eps=eps, alpha=2.5 * eps / steps, steps=steps,
                    generator=torch.Generator().manual_seed(seed))
        return accuracy(model, x_adv, y)

    assert robust_accuracy(more) <= robust_accuracy(fewer) + ACCURACY_NOISE


# ---------------------------------------------------------------------------------------------
# determinism and batch independence


@settings(deadline=None, max_examples=examples(15))
@given(batch=image_batches(), eps=positive_eps, seed=seeds)
def test_seeded_attacks_are_deterministic(batch, eps, seed):
    x, y = batch
    model = tiny_net(x.shape[1])
    first, second = (run_linf("pgd", model, x, y, eps=eps, seed=seed) for _ in range(2))
    assert torch.equal(first, second)
    assert torch.equal(cw_l2(model, x, y, steps=5), cw_l2(model, x, y, steps=5))


@settings(deadline=None, max_examples=examples(15))
@given(batch=image_batches(dtype=torch.float64), eps=positive_eps, seed=seeds, targeted=st.booleans())
def test_a_batch_gives_the_same_result_as_its_images_one_by_one(batch, eps, seed, targeted):
    # float64: batch and single-image kernels round differently, and a float32 gradient near 0 could flip sign
    x, y = batch
    model = tiny_net(x.shape[1], torch.float64)
    start = torch.empty_like(x).uniform_(-eps, eps, generator=torch.Generator().manual_seed(seed))
    attacks = {
        "fgsm": lambda xs, ys, s: fgsm(model, xs, ys, eps=eps, targeted=targeted),
        "bim": lambda xs, ys, s: bim(model, xs, ys, eps=eps, alpha=eps / 4, steps=3, targeted=targeted),
        "pgd": lambda xs, ys, s: pgd(model, xs, ys, eps=eps, alpha=eps / 4, steps=3, targeted=targeted, init=s),
        "cw": lambda xs, ys, s: cw_l2(model, xs, ys, c=5.0, steps=5, targeted=targeted),
        "deepfool": lambda xs, ys, s: deepfool(model, xs, max_iter=5).x_adv,
    }
    for name, attack in attacks.items():
        whole = attack(x, y, start)
        one_by_one = torch.cat([attack(x[i:i + 1], y[i:i + 1], start[i:i + 1]) for i in range(len(x))])
        assert torch.allclose(whole, one_by_one, atol=1e-5, rtol=0), name


# ---------------------------------------------------------------------------------------------
# DeepFool


@settings(deadline=None, max_examples=examples(25))
@given(batch=image_batches(), overshoot=st.sampled_from([0.02, 0.1]))
def test_deepfool_successes_lie_strictly_past_the_decision_boundary(batch, overshoot):
    x, _ = batch
    model = tiny_net(x.shape[1])
    result = deepfool(model, x, overshoot=overshoot)
    for i in torch.nonzero(result.success).flatten().tolist():
        with torch.no_grad():  # one image at a time: independent of the batch the attack ran on
            original = model(x[i:i + 1]).argmax(1)
            margin = margin_loss(model(result.x_adv[i:i + 1]), original)
        assert margin.item() > 0, f"image {i} reported successful but its original class still wins"
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


@settings(deadline=None, max_examples=examples(25))
@given(batch=image_batches())
def test_deepfool_reports_misclassified_inputs_instead_of_zero_norm_successes(batch):
    x, y = batch
    model = tiny_net(x.shape[1])
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    result = deepfool(model, x, y=y, max_iter=10)
    assert torch.equal(result.misclassified, wrong)
    assert not result.success[wrong].any()
    assert torch.equal(result.x_adv[wrong], x[wrong])
    assert torch.all(result.iterations[wrong] == 0)


# ---------------------------------------------------------------------------------------------
# Carlini-Wagner


@settings(deadline=None, max_examples=examples(20))
@given(batch=image_batches(), c=cw_weights)
def test_cw_outputs_stay_in_pixel_range_and_its_successes_are_misclassified(batch, c):
    x, y = batch
    model = tiny_net(x.shape[1])
    x_adv = cw_l2(model, x, y, c=c, steps=30, lr=0.05)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    changed = (x_adv != x).flatten(1).any(1)  # unsuccessful images come back as x itself
    with torch.no_grad():
        assert torch.all(model(x_adv).argmax(1)[changed] != y[changed])


@settings(deadline=None, max_examples=examples(20))
@given(batch=image_batches(), c=cw_weights)
def test_targeted_cw_successes_are_classified_as_the_target(batch, c):
    x, target = batch
    model = tiny_net(x.shape[1])
    x_adv = cw_l2(model, x, target, c=c, steps=30, lr=0.05, targeted=True)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    changed = (x_adv != x).flatten(1).any(1)
    with torch.no_grad():
        assert torch.all(model(x_adv).argmax(1)[changed] == target[changed])


# ---------------------------------------------------------------------------------------------
# input validation


@settings(deadline=None, max_examples=examples(15))
@given(name=eps_attack_names, batch=image_batches(), eps=negative_numbers)
def test_negative_eps_is_rejected_with_a_message_naming_eps(name, batch, eps):
    x, y = batch
    with pytest.raises(ValueError, match=r"\beps\b"):
        run_any(name, tiny_net(x.shape[1]), x, y, eps=eps)


@settings(deadline=None, max_examples=examples(15))
@given(name=all_attack_names, batch=image_batches(), position=seeds, bad=st.sampled_from([float("nan"), float("inf")]))
def test_nan_or_inf_pixels_are_rejected_with_a_message_naming_x(name, batch, position, bad):
    x, y = batch
    x = x.clone()
    x.view(-1)[position % x.numel()] = bad
    with pytest.raises(ValueError, match=r"\bx\b.*NaN"):
        run_any(name, tiny_net(x.shape[1]), x, y)


@settings(deadline=None, max_examples=examples(15))
@given(name=all_attack_names, batch=image_batches(), position=seeds, bad=out_of_range_pixels)
def test_pixels_outside_unit_range_are_rejected_with_a_message_naming_x(name, batch, position, bad):
    x, y = batch
    x = x.clone()
    x.view(-1)[position % x.numel()] = bad
    with pytest.raises(ValueError, match=r"\bx\b.*outside \[0, 1\]"):
        run_any(name, tiny_net(x.shape[1]), x, y)


# ---------------------------------------------------------------------------------------------
# the model is left as it was


@settings(deadline=None, max_examples=examples(20))
@given(name=all_attack_names, batch=image_batches(), training=st.booleans(), grad_flags=requires_grad_flags)
def test_attacks_leave_training_mode_and_requires_grad_as_they_were_and_accumulate_no_grad(
        name, batch, training, grad_flags):
    x, y = batch
    model = tiny_net(x.shape[1])
    model.train(training)
    model[4].train(not training)  # a submodule in the other mode must come back in it too
    params = list(model.parameters())
    for param, flag in zip(params, grad_flags):
        param.requires_grad_(flag)
        param.grad = None
    modes_before = [module.training for module in model.modules()]
    try:
        run_any(name, model, x, y)
        assert [module.training for module in model.modules()] == modes_before
        assert [param.requires_grad for param in params] == grad_flags
        assert all(param.grad is None for param in params)
    finally:
        model.eval()
        for param in params:
            param.requires_grad_(True)
