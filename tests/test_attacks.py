"""Unit tests of the attack library: exact results on models whose answers are known by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advclaims.attacks import (NonFiniteLogits, bim, cw_l2, deepfool, fgsm, fooling_rate, frozen, input_gradient,
                               margin_loss, pgd, project_linf, universal_perturbation)
from advclaims.attacks.deepfool import STEP_SLACK
from advclaims.models import Normalize

NUM_CLASSES = 5


class Affine(nn.Module):
    """logits = flatten(x) @ weight.T + bias: every attack's answer is known in closed form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


class NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return torch.full((x.shape[0], 3), float("nan")) * self.scale


def binary_affine(side: int = 4, seed: int = 0) -> tuple[Affine, torch.Tensor]:
    """Two classes, logit_0 = 0 and logit_1 = w.x + b; returns the model and w as an image."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(side * side, generator=g)
    weight = torch.stack([torch.zeros_like(w), w])
    return Affine(weight, torch.tensor([0.0, -float(w.sum()) * 0.5 - 0.3])), w.view(1, 1, side, side)


def steep_net(channels: int = 1, seed: int = 1) -> nn.Module:
    """Seeded conv net on centred pixels, so small perturbations change its predictions."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            Normalize((0.5,) * channels, (0.25,) * channels), nn.Conv2d(channels, 8, 3, padding=1),
            nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(128, NUM_CLASSES),
        )
    return net.eval()


def images(n: int = 32, channels: int = 1, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


def predictions(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


ALL_ATTACKS = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, eps=0.1),
    "pgd": lambda m, x, y: pgd(m, x, y, eps=0.1, alpha=0.02, steps=3),
    "bim": lambda m, x, y: bim(m, x, y, eps=0.1, alpha=0.02, steps=3),
    "cw": lambda m, x, y: cw_l2(m, x, y, steps=3),
    "deepfool": lambda m, x, y: deepfool(m, x, y=y, max_iter=3).x_adv,
    "universal": lambda m, x, y: universal_perturbation(m, x, eps=0.1, max_passes=1, deepfool_steps=2),
}


# ---------------------------------------------------------------------------------------------
# FGSM, PGD, BIM


def test_fgsm_steps_along_the_sign_of_the_loss_gradient():
    model, w = binary_affine()
    x = torch.full((1, 1, 4, 4), 0.5)
    up = (x + 0.1 * w.sign()).clamp(0, 1)
    down = (x - 0.1 * w.sign()).clamp(0, 1)
    # CE toward class 0 grows with logit_1 = w.x + b, so its gradient is a positive multiple of w
    assert torch.equal(fgsm(model, x, torch.tensor([0]), eps=0.1), up)
    assert torch.equal(fgsm(model, x, torch.tensor([1]), eps=0.1), down)
    assert torch.equal(fgsm(model, x, torch.tensor([1]), eps=0.1, targeted=True), up)


def test_fgsm_clips_to_pixel_range_unless_told_not_to():
    model, w = binary_affine()
    x = torch.ones(1, 1, 4, 4)
    y = torch.tensor([0])
    assert fgsm(model, x, y, eps=0.2).max() == 1
    assert torch.allclose(fgsm(model, x, y, eps=0.2, clip=False), x + 0.2 * w.sign())


def test_pgd_with_zero_steps_and_no_random_start_returns_x():
    model, x = steep_net(), images()
    assert torch.equal(pgd(model, x, predictions(model, x), eps=0.3, alpha=0.1, steps=0, random_start=False), x)


def test_pgd_random_start_is_uniform_noise_from_the_given_generator():
    x = images()
    y = predictions(steep_net(), x)
    start = pgd(steep_net(), x, y, eps=0.1, alpha=0.01, steps=0, generator=torch.Generator().manual_seed(7))
    noise = torch.empty_like(x).uniform_(-0.1, 0.1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(start, (x + noise).clamp(0, 1))
    other = pgd(steep_net(), x, y, eps=0.1, alpha=0.01, steps=0, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(start, other)


def test_pgd_init_is_projected_onto_the_eps_ball():
    x = images()
    y = predictions(steep_net(), x)
    out = pgd(steep_net(), x, y, eps=0.1, alpha=0.01, steps=0, init=torch.full((1, 1, 1, 1), 5.0))
    assert torch.allclose(out, (x + 0.1).clamp(0, 1))


def test_pgd_init_of_the_wrong_shape_is_rejected():
    x = images()
    with pytest.raises(ValueError, match="init"):
        pgd(steep_net(), x, predictions(steep_net(), x), eps=0.1, alpha=0.01, steps=1, init=torch.zeros(3, 1, 8, 8))


def test_pgd_rejects_an_unknown_loss():
    x = images()
    with pytest.raises(ValueError, match="loss"):
        pgd(steep_net(), x, predictions(steep_net(), x), eps=0.1, alpha=0.01, steps=1, loss="hinge")


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_untargeted_pgd_flips_most_predictions_of_a_steep_net(loss):
    model, x = steep_net(), images(64)
    y = predictions(model, x)
    x_adv = pgd(model, x, y, eps=0.3, alpha=0.05, steps=20, loss=loss, generator=torch.Generator().manual_seed(0))
    assert (predictions(model, x_adv) == y).float().mean() < 0.2


def test_targeted_pgd_reaches_the_target_on_most_images():
    model, x = steep_net(), images(64)
    target = (predictions(model, x) + 1) % NUM_CLASSES
    x_adv = pgd(model, x, target, eps=0.3, alpha=0.05, steps=20, targeted=True,
                generator=torch.Generator().manual_seed(0))
    assert (predictions(model, x_adv) == target).float().mean() > 0.8


def test_bim_is_pgd_without_random_start():
    model, x = steep_net(), images()
    y = predictions(model, x)
    assert torch.equal(bim(model, x, y, eps=0.1, alpha=0.02, steps=5),
                       pgd(model, x, y, eps=0.1, alpha=0.02, steps=5, random_start=False))


def test_margin_loss_is_positive_exactly_when_the_label_is_not_the_prediction():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert torch.equal(margin_loss(logits, torch.tensor([0, 0])), torch.tensor([-1.0, 3.0]))


def test_project_linf_clamps_to_the_ball_and_to_pixel_range():
    x = torch.tensor([0.05, 0.5, 0.95]).view(1, 1, 1, 3)
    x_adv = torch.tensor([-1.0, 0.52, 2.0]).view(1, 1, 1, 3)
    assert torch.allclose(project_linf(x_adv, x, 0.1), torch.tensor([0.0, 0.52, 1.0]).view(1, 1, 1, 3))
    assert torch.allclose(project_linf(x_adv, x, 0.01), torch.tensor([0.04, 0.51, 0.96]).view(1, 1, 1, 3))


# ---------------------------------------------------------------------------------------------
# DeepFool


@pytest.mark.parametrize("overshoot", [0.0, 0.02, 0.5])
def test_deepfool_on_an_affine_classifier_takes_one_exact_step_past_the_boundary(overshoot):
    model, w = binary_affine()
    x = torch.full((1, 1, 4, 4), 0.5)
    with torch.no_grad():
        f = float(model(x)[0, 1] - model(x)[0, 0])  # negative: class 0 is predicted
    unit = w / w.norm()
    expected = x + (1 + overshoot) * (abs(f) / w.norm() + STEP_SLACK) * unit
    result = deepfool(model, x, overshoot=overshoot)
    assert torch.allclose(result.x_adv, expected, atol=1e-6)
    assert result.success.tolist() == [True] and result.iterations.tolist() == [1]


def test_deepfool_fools_every_image_of_a_steep_net_with_small_perturbations():
    model, x = steep_net(), images(64)
    result = deepfool(model, x)
    assert result.success.all()
    assert not result.misclassified.any()
    assert (predictions(model, result.x_adv) != predictions(model, x)).all()
    assert (result.x_adv - x).flatten(1).norm(dim=1).median() < 1.0


def test_deepfool_checks_num_classes_and_candidates():
    model, x = steep_net(), images(4)
    with pytest.raises(ValueError, match="num_classes"):
        deepfool(model, x, num_classes=10)
    with pytest.raises(ValueError, match="candidates"):
        deepfool(model, x, candidates=1)
    assert deepfool(model, x, num_classes=NUM_CLASSES, candidates=2).x_adv.shape == x.shape


# ---------------------------------------------------------------------------------------------
# Carlini-Wagner


def test_cw_fools_most_images_of_a_steep_net():
    model, x = steep_net(), images(64)
    y = predictions(model, x)
    x_adv = cw_l2(model, x, y, c=5.0, steps=100, lr=0.05)
    assert (predictions(model, x_adv) != y).float().mean() > 0.9


def test_cw_returns_x_itself_when_no_iterate_succeeds():
    model, x = steep_net(), images()
    y = predictions(model, x)
    assert torch.equal(cw_l2(model, x, y, steps=0), x)
    assert torch.equal(cw_l2(model, x, y, c=0.0, steps=20), x)  # no misclassification term: nothing to gain


def test_cw_never_beats_and_nearly_reaches_the_exact_distance_to_an_affine_boundary():
    model, w = binary_affine()
    x = torch.full((1, 1, 4, 4), 0.5)
    with torch.no_grad():
        boundary_distance = float((model(x)[0, 1] - model(x)[0, 0]).abs() / w.norm())
    x_adv = cw_l2(model, x, torch.tensor([0]), c=10.0, steps=300, lr=0.01)
    distance = float((x_adv - x).norm())
    assert predictions(model, x_adv).item() == 1
    assert boundary_distance <= distance <= 1.2 * boundary_distance


# ---------------------------------------------------------------------------------------------
# universal perturbations


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 2.0)])
def test_universal_perturbation_is_one_image_within_the_budget_that_fools_some_images(norm, eps):
    model, x = steep_net(channels=3), images(64, channels=3)
    v = universal_perturbation(model, x, eps=eps, norm=norm)
    assert v.shape == (1, 3, 8, 8)
    size = v.abs().max() if norm == "linf" else v.norm()
    assert size <= eps + 1e-6
    assert fooling_rate(model, x, v) > 0.3


def test_universal_perturbation_is_zero_without_budget_or_passes():
    model, x = steep_net(), images()
    assert torch.equal(universal_perturbation(model, x, eps=0.0), torch.zeros(1, 1, 8, 8))
    assert torch.equal(universal_perturbation(model, x, eps=0.2, max_passes=0), torch.zeros(1, 1, 8, 8))
    assert fooling_rate(model, x, torch.zeros(1, 1, 8, 8)) == 0.0


def test_universal_perturbation_stops_once_the_fooling_rate_reaches_one_minus_delta():
    model, x = steep_net(), images(64)
    one_pass = universal_perturbation(model, x, eps=0.2, max_passes=1)
    assert fooling_rate(model, x, one_pass) > 0.01
    assert torch.equal(universal_perturbation(model, x, eps=0.2, max_passes=5, delta=0.99), one_pass)
    assert not torch.equal(universal_perturbation(model, x, eps=0.2, max_passes=5, delta=0.0), one_pass)


def test_universal_perturbation_rejects_bad_delta_and_norm():
    model, x = steep_net(), images(4)
    with pytest.raises(ValueError, match="delta"):
        universal_perturbation(model, x, eps=0.1, delta=1.0)
    with pytest.raises(ValueError, match="norm"):
        universal_perturbation(model, x, eps=0.1, norm="l1")


# ---------------------------------------------------------------------------------------------
# contract shared by every attack


@pytest.mark.parametrize("name", sorted(ALL_ATTACKS))
def test_attacks_leave_their_inputs_untouched_and_return_detached_tensors(name):
    model, x = steep_net(), images(8)
    y = predictions(model, x)
    x_before, y_before = x.clone(), y.clone()
    out = ALL_ATTACKS[name](model, x, y)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert not out.requires_grad and out.grad_fn is None
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", sorted(ALL_ATTACKS))
def test_nonfinite_logits_raise_an_error_that_says_to_retrain(name):
    x = images(4)
    with pytest.raises(NonFiniteLogits, match="NaN/inf logits.*retrain"):
        ALL_ATTACKS[name](NaNModel(), x, torch.zeros(4, dtype=torch.long))


BAD_CALLS = [  # (id, what the message must say, the call)
    ("alpha_zero", "alpha", lambda m, x, y: pgd(m, x, y, eps=0.1, alpha=0.0, steps=1)),
    ("steps_negative", "steps", lambda m, x, y: pgd(m, x, y, eps=0.1, alpha=0.01, steps=-1)),
    ("max_iter_negative", "max_iter", lambda m, x, y: deepfool(m, x, max_iter=-2)),
    ("lr_negative", "lr", lambda m, x, y: cw_l2(m, x, y, lr=-1.0)),
    ("x_3d", "x must be a 4-D float", lambda m, x, y: fgsm(m, x[0], y, eps=0.1)),
    ("x_uint8", "x must be a 4-D float", lambda m, x, y: fgsm(m, (x * 255).to(torch.uint8), y, eps=0.1)),
    ("y_short", r"y must have shape \(4,\)", lambda m, x, y: fgsm(m, x, y[:3], eps=0.1)),
    ("y_too_large", "y holds labels", lambda m, x, y: fgsm(m, x, y + NUM_CLASSES, eps=0.1)),
    ("y_negative", "y holds labels", lambda m, x, y: deepfool(m, x, y=-1 - y)),
    ("y_float", "y must be an integer", lambda m, x, y: fgsm(m, x, y.float(), eps=0.1)),
]


@pytest.mark.parametrize("message,call", [pytest.param(m, c, id=i) for i, m, c in BAD_CALLS])
def test_invalid_arguments_are_rejected_with_a_message_naming_the_argument(message, call):
    model, x = steep_net(), images(4)
    with pytest.raises(ValueError, match=message) as error:
        call(model, x, predictions(model, x))
    assert "\n" not in str(error.value) and ";" in str(error.value)  # one line: the problem; the fix


def test_frozen_restores_mixed_flags_even_when_the_body_raises():
    model = steep_net()
    model.train()
    model[2].eval()
    model[1].weight.requires_grad_(False)
    with pytest.raises(RuntimeError):
        with frozen(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("attack failed")
    assert model.training and not model[2].training and model[7].training
    assert not model[1].weight.requires_grad and model[1].bias.requires_grad


def test_input_gradient_is_the_gradient_of_the_summed_loss_and_leaves_parameters_alone():
    model, w = binary_affine()
    x = images(3, side=4)
    y = torch.tensor([0, 1, 0])
    with frozen(model):
        grad = input_gradient(model, x, y, lambda logits, labels: logits[:, 1] * (1 - 2 * labels))
    assert torch.allclose(grad, torch.stack([w, -w, w]).view(3, 1, 4, 4))
    assert all(p.grad is None for p in model.parameters())
