"""Library code of the local_properties claims: smoothness measures, curve statistics, the image
bootstrap, kernel magnitudes and the transfer analysis, on tiny tensors and a tiny ResNet."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advclaims import models

from advclaims.verdict import stats
from advclaims.analysis.local_properties import layers as lp
from advclaims.analysis.local_properties import spectra as lpf
from advclaims.analysis.local_properties.smoothness import bound_fraction, neighbour_correlation
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel

seeds = st.integers(0, 2**16)
scales = st.floats(0.01, 10)
eps_values = st.floats(0.01, 0.5)


def noise(seed, n=3, c=2, h=8, w=8):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def tiny(seed=0) -> TrainedModel:
    torch.manual_seed(seed)
    net = models.build("resnet18", in_channels=1, num_classes=3, width=2, input_size=8).eval()
    return TrainedModel("T", net, {}, f"tiny{seed}", {}, False)


def attack_set(x, x_adv, y, source="T") -> AdversarialSet:
    return AdversarialSet("pgd20", {"eps": 0.1}, source, x, x_adv, y)


# --- smoothness ------------------------------------------------------------------------------


@given(seed=seeds, a=scales, b=st.floats(-1, 1))
@settings(deadline=None, max_examples=30)
def test_neighbour_correlation_is_bounded_and_ignores_positive_scale_and_offset(seed, a, b):
    d = noise(seed)
    r = neighbour_correlation(d)
    assert r.shape == (3, 2) and bool(((r >= -1 - 1e-5) & (r <= 1 + 1e-5)).all())
    assert torch.allclose(neighbour_correlation(a * d + b), r, atol=1e-4)


def test_neighbour_correlation_orders_smooth_noise_and_checkerboard_perturbations():
    i = torch.arange(16.0)
    ramp = (i.view(-1, 1) + i.view(1, -1)).expand(1, 1, 16, 16)
    checker = ((i.view(-1, 1) + i.view(1, -1)) % 2 * 2 - 1).expand(1, 1, 16, 16)
    white = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert neighbour_correlation(ramp).item() > 0.95
    assert neighbour_correlation(checker).item() == pytest.approx(-1.0)
    assert abs(neighbour_correlation(white).item()) < 0.1
    assert neighbour_correlation(torch.full((1, 1, 4, 4), 0.3)).item() == 0.0  # no order to measure


@given(seed=seeds, eps=eps_values)
@settings(deadline=None, max_examples=30)
def test_bound_fraction_counts_pixels_at_plus_or_minus_eps(seed, eps):
    d = noise(seed)
    signs = eps * torch.sign(d)
    assert bool((bound_fraction(signs, eps) == 1).all())
    assert bool((bound_fraction(torch.zeros_like(d), eps) == 0).all())
    half = torch.where(torch.arange(64).view(8, 8) < 16, signs, 0.5 * signs)
    assert torch.allclose(bound_fraction(half, eps), torch.full((3, 2), 0.25))


# --- statistics of curves and trends ---------------------------------------------------------


@given(seed=seeds)
@settings(deadline=None, max_examples=10)
def test_the_image_bootstrap_of_a_mean_matches_the_mean_estimate(seed):
    v = np.random.default_rng(seed).random(40)
    e = lp.bootstrap_images(lambda i: v[i].mean(), len(v), method="percentile")
    assert e.value == pytest.approx(v.mean()) and e.low <= e.value <= e.high
    assert e.high - e.low < 0.5


def test_peak_fall_is_zero_for_a_rising_curve_and_the_drop_for_a_peaked_one():
    rising = np.array([[0, 1], [0, 1], [1, 1]], dtype=float)  # 3 images x 2 radii
    assert lpf.peak_fall(rising) == 0.0
    peaked = np.array([[0, 1, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=float)
    assert lpf.peak_fall(peaked) == pytest.approx(0.75 - 0.25)


@given(n=st.integers(3, 12))
@settings(deadline=None, max_examples=20)
def test_spearman_rho_is_one_for_rising_minus_one_for_falling_and_zero_for_flat_trends(n):
    from advclaims import stats
    x = list(range(n))
    assert stats.spearman_rho(x, np.arange(n) ** 2) == pytest.approx(1.0)
    assert stats.spearman_rho(x, -np.arange(n)) == pytest.approx(-1.0)
    assert stats.spearman_rho(x, np.ones(n)) == 0.0 == stats.spearman_rho(np.ones(n), x)  # no trend either way


def test_low_pass_at_the_full_spectrum_gives_the_clean_correctness():
    model = tiny()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model.module(x).argmax(1)
    y[:2] = (y[:2] + 1) % 3  # two images wrong
    s = attack_set(x, x.flip(0), y)
    radii = lpf.radii_of(x)
    assert radii[0] == 1 and radii[-1] == 6  # full radius of an 8x8 spectrum
    curves = lpf.low_pass_curves(model, s, radii)
    assert curves["nat"].shape == (6, len(radii))
    assert curves["nat"][:, -1].tolist() == [0, 0, 1, 1, 1, 1]


def test_a_perturbation_that_changes_nothing_has_a_zero_log_amplitude_difference():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert bool((lpf.log_amplitude_difference(attack_set(x, x.clone(), torch.zeros(2, dtype=torch.long))) == 0).all())


# --- models and responses --------------------------------------------------------------------


def test_kernel_magnitudes_has_one_entry_per_spatial_kernel_and_scales_with_the_weights():
    model = tiny().module
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    mags = lp.kernel_magnitudes(model)
    assert len(mags) == sum(m.out_channels * m.in_channels for m in convs)
    with torch.no_grad():
        for m in convs:
            m.weight.mul_(0.5)
    assert np.allclose(lp.kernel_magnitudes(model), 0.5 * mags, rtol=1e-5)


def test_examples_transferred_from_the_model_itself_give_unit_ratios_and_equal_accuracy():
    model = tiny()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(12, 1, 8, 8, generator=g)
    x_adv = (x + 0.1 * torch.sign(torch.randn(12, 1, 8, 8, generator=g))).clamp(0, 1)
    s = attack_set(x, x_adv, torch.randint(0, 3, (12,), generator=g))
    m = lp.transfer_response_differences(model, own_set=s, transferred_set=s)
    for name, e in m.statistics.items():
        if "ratio" in name:
            assert e.value == pytest.approx(1.0)
    assert m.statistics["transferred_minus_own_accuracy"].value == 0.0


def test_sets_of_different_images_are_refused():
    x = torch.rand(4, 1, 8, 8)
    a = attack_set(x, x, torch.zeros(4, dtype=torch.long))
    b = attack_set(x, x, torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="same natural images"):
        lp.same_images(a, b)


def test_too_few_failed_attacks_is_an_error_that_says_so():
    model = tiny()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model.module(x).argmax(1)
    with pytest.raises(ValueError, match="successful attacks"):
        lp.outcome_groups(model, attack_set(x, x.clone(), y))  # nothing changes: no attack succeeds


# --- by construction: kept out of expected/ ---------------------------------------------------

zero_one_curves = st.integers(2, 12).flatmap(lambda n: st.lists(
    st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n), min_size=2, max_size=8))


@given(curve=zero_one_curves)
@settings(deadline=None, max_examples=40)
def test_the_peak_of_a_curve_is_never_below_its_final_value_so_lp2_does_not_check_it(curve):
    """LP-2's 'the peak is at or above the final robustness' holds for every curve: the peak is a maximum over
    radii that include the full spectrum. It is a value in the report, never a check."""
    c = np.array(curve).T  # images x radii
    assert lpf.peak_fall(c) >= 0.0


# --- the ceiling of Max near the input (LP-8, LP-9, LP-11) -------------------------------------


def test_the_first_conv_max_reaches_its_ceiling_exactly_when_the_perturbation_follows_a_kernels_signs():
    from advclaims.analysis.responses import max_bound, response_differences
    model = tiny().module
    with torch.no_grad():
        model.normalize.std.fill_(0.25)  # the ceiling scales with eps / std whatever the dataset
    eps = 0.1
    w = model.conv1.weight.detach()
    k = int(w.abs().sum((1, 2, 3)).argmax())
    bound = max_bound(model, "conv1", eps)
    assert bound == pytest.approx(float(w[k].abs().sum()) * eps / 0.25, rel=1e-5)
    x = torch.full((1, 1, 8, 8), 0.5)
    delta = torch.zeros_like(x)
    delta[0, 0, 2:5, 2:5] = eps * torch.sign(w[k, 0])  # one 3x3 patch aligned with the largest kernel
    d = response_differences(model, x, x + delta, layers=("conv1", "layer0"))
    assert float(d["conv1"]["max"][0]) == pytest.approx(bound, rel=1e-4)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(16, 1, 8, 8, generator=g) * 0.8 + 0.1
    random = (x + eps * (2 * torch.rand(x.shape, generator=g) - 1))
    d = response_differences(model, x, random, layers=("conv1", "layer0"))
    assert bool((d["conv1"]["max"] <= bound * (1 + 1e-5)).all())
    assert bool((d["layer0"]["max"] <= max_bound(model, "layer0", eps) * (1 + 1e-5)).all())
    assert max_bound(model, "layer1", eps) is None  # no ceiling known past the stem


def test_a_max_ratio_whose_groups_sit_at_their_ceiling_is_uninformative_with_the_reason():
    rng = np.random.default_rng(0)
    n = 40
    bound = 2.0
    d = {"conv1": {"max": torch.full((n,), bound), "total": torch.tensor(rng.random(n) + 1)},
         "layer4": {"max": torch.tensor(rng.random(n) + 1), "total": torch.tensor(rng.random(n) + 1)}}
    d["conv1"]["max"][:5] = 0.9 * bound  # near-saturated: not every image at the ceiling, most are
    success = np.arange(n) % 2 == 0
    m = lp.outcome_comparison(d, success, ~success, layers=("conv1", "layer4"),
                              bounds={"conv1": bound, "layer4": None})
    for name in ("max_ratio_conv1", "max_ratio_deviation_conv1"):
        assert "saturates" in m.statistics[name].uninformative
    for name in ("total_ratio_conv1", "max_ratio_layer4", "total_ratio_layer4_one_sided"):
        assert m.statistics[name].uninformative is None
    assert any("Conv1 Max saturates" in note for note in m.notes)
    below = lp.outcome_comparison({**d, "conv1": {**d["conv1"], "max": 0.5 * d["conv1"]["max"]}}, success, ~success,
                                  layers=("conv1", "layer4"), bounds={"conv1": bound, "layer4": None})
    assert below.statistics["max_ratio_conv1"].uninformative is None


# --- LP-5: accuracy above chance agreement over a range of radii ------------------------------


def test_one_class_predicted_everywhere_is_exactly_at_chance_whatever_the_class_shares():
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    above = lpf.accuracy_above_chance(np.zeros((10, 4), dtype=int), y, 3)
    assert above(np.arange(10)) == pytest.approx(0.0)  # accuracy 0.6 = the predicted class's share
    perfect = lpf.accuracy_above_chance(np.repeat(y[:, None], 4, 1), y, 3)
    assert perfect(np.arange(10)) == pytest.approx(1 - (0.6 ** 2 + 0.3 ** 2 + 0.1 ** 2))


def test_the_high_pass_range_runs_from_radius_one_to_a_fraction_of_the_side():
    x = torch.zeros(1, 1, 28, 28)
    assert lpf.high_pass_radii(x, 0.25) == list(range(1, 8))
    assert lpf.high_pass_radii(x, 0.01) == [1, 2]            # a range has at least two radii
    assert lpf.high_pass_radii(x, 5.0)[-1] == lpf.radii_of(x)[-1]  # never past the full spectrum


# --- LP-13: trends over the trained models ----------------------------------------------------

def scaled_sweep(scales: tuple[float, ...]) -> list[tuple[float, TrainedModel, AdversarialSet]]:
    """Four copies of one tiny net whose 3x3 kernels are scaled by ``scales`` (weight decays 1e-4 .. 5e-3 in
    order), each with the same images and perturbation: the kernel magnitudes' order is set by construction."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(12, 1, 8, 8, generator=g)
    x_adv = (x + 0.1 * torch.sign(torch.randn(12, 1, 8, 8, generator=g))).clamp(0, 1)
    y = torch.randint(0, 3, (12,), generator=g)
    members = []
    for wd, scale in zip((1e-4, 5e-4, 1e-3, 5e-3), scales):
        model = tiny()
        with torch.no_grad():
            for m in model.module.modules():
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1:
                    m.weight.mul_(scale)
        members.append((wd, model, attack_set(x, x_adv, y)))
    return members


def test_lp13_trends_are_exact_permutation_tests_over_the_four_models():
    """The unit is the trained model: a perfect falling order of 4 models has one-sided p = 1/24 (not an
    interval of -1 [-1, -1] from resampling kernels), the reversed sweep has it the other way, and one swapped
    pair is no longer significant at 5% (p = 4/24)."""
    falling = lp.weight_decay_sweep(scaled_sweep((1.0, 0.8, 0.6, 0.4))).statistics["kernel_magnitude_rho"]
    assert falling.value == pytest.approx(-1.0)
    assert falling.n == 4
    assert falling.pvalues["less"] == pytest.approx(1 / 24)
    assert falling.pvalues["greater"] == pytest.approx(1.0)
    rising = lp.weight_decay_sweep(scaled_sweep((0.4, 0.6, 0.8, 1.0))).statistics["kernel_magnitude_rho"]
    assert rising.value == pytest.approx(1.0) and rising.pvalues["greater"] == pytest.approx(1 / 24)
    swapped = lp.weight_decay_sweep(scaled_sweep((0.8, 1.0, 0.6, 0.4))).statistics["kernel_magnitude_rho"]
    assert swapped.value == pytest.approx(-0.8) and swapped.pvalues["less"] == pytest.approx(4 / 24)
    assert [str(stats.verdict(e, "<", 0.0)) for e in (falling, rising, swapped)] == [
        "reproduced", "contradicted", "inconclusive"]
    # with LP-13's 4 deciding checks a contradiction needs p < 0.05 / 4, which 4 models cannot give (1/24 at best)
    assert str(stats.verdict(rising, "<", 0.0, m=4)) == "inconclusive"
