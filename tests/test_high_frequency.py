"""Tests for advclaims.analysis.high_frequency: targets, split halves, the Gram-matrix split-half
statistic against a direct computation, spectrum correlations, and the analyses on a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from advclaims import models
from advclaims.analysis import high_frequency as hf
from advclaims.analysis.frequency import radial_distance
from advclaims.pipeline import TrainedModel

# ---------------------------------------------------------------------------------------------
# strategies (named once)

seeds = st.integers(0, 2**16)
class_counts = st.integers(2, 6)
dims = st.integers(1, 12)
radii = st.floats(0, 6)
scales = st.floats(0.01, 100)

HYP = settings(deadline=None, max_examples=25)


def labels(seed: int, k: int, per_class: int = 4) -> torch.Tensor:
    y = torch.arange(k).repeat_interleave(per_class)
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]


def direct_ratios(f: torch.Tensor, y: torch.Tensor, half: torch.Tensor, k: int, weights: torch.Tensor) -> torch.Tensor:
    """The split-half ratio of every class from weighted means of the features themselves."""
    f, w = f.double(), weights.double()

    def mean(mask):
        return (w[mask, None] * f[mask]).sum(0) / w[mask].sum()

    full = torch.stack([mean(y == c) for c in range(k)])
    out = []
    for c in range(k):
        within = (mean((y == c) & (half == 0)) - mean((y == c) & (half == 1))).norm()
        between = min((full[c] - full[d]).norm() for d in range(k) if d != c)
        out.append(within / between)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# targets and halves


@given(k=class_counts, seed=seeds)
@HYP
def test_targets_are_never_the_label_and_are_reproducible(k, seed):
    y = labels(seed, k, per_class=20)
    t = hf.draw_targets(y, k, seed=seed)
    assert ((t >= 0) & (t < k)).all() and (t != y).all()
    assert t.equal(hf.draw_targets(y, k, seed=seed))


def test_targets_cover_every_other_class():
    y = torch.zeros(900, dtype=torch.long)
    assert set(hf.draw_targets(y, 10).tolist()) == set(range(1, 10))


@given(k=class_counts, seed=seeds, per_class=st.integers(2, 7))
@HYP
def test_split_halves_are_disjoint_stratified_and_balanced(k, seed, per_class):
    y = labels(seed, k, per_class)
    half = hf.split_halves(y, k, seed=seed)
    assert set(half.tolist()) <= {0, 1}
    for c in range(k):
        sizes = [int(((y == c) & (half == h)).sum()) for h in (0, 1)]
        assert min(sizes) >= 1 and abs(sizes[0] - sizes[1]) <= 1


def test_a_class_with_one_image_cannot_be_split():
    with pytest.raises(ValueError, match="at least 2"):
        hf.split_halves(torch.tensor([0, 0, 1]), 2)


# ---------------------------------------------------------------------------------------------
# HF-1's statistic


@given(k=class_counts, d=dims, seed=seeds)
@HYP
def test_the_gram_statistic_equals_the_direct_ratio_on_every_resample(k, d, seed):
    g = torch.Generator().manual_seed(seed)
    y = labels(seed, k)
    f = torch.randn(len(y), d, generator=g) + 3 * torch.randn(k, d, generator=g)[y]
    half = hf.split_halves(y, k, seed=seed)
    statistic, ratios = hf.split_half_statistic(f, y, half, k)
    identity = np.arange(len(y), dtype=float)
    assert torch.allclose(ratios(identity)[:, 0], direct_ratios(f, y, half, k, torch.ones(len(y))), atol=1e-8)
    # a resample is the same images with multiplicities: weighted means
    resample = torch.cat([torch.arange(len(y)), torch.nonzero(half == 0).flatten()])  # every image, half A twice
    weights = torch.bincount(resample, minlength=len(y))
    assert torch.allclose(ratios(resample.double().numpy())[:, 0], direct_ratios(f, y, half, k, weights), atol=1e-8)


@given(seed=seeds)
@HYP
def test_the_statistic_is_vectorised_over_resamples(seed):
    y = labels(seed, 3)
    f = torch.randn(len(y), 5, generator=torch.Generator().manual_seed(seed))
    statistic, _ = hf.split_half_statistic(f, y, hf.split_halves(y, 3), 3)
    rng = np.random.default_rng(seed)
    batch = np.stack([np.sort(rng.permutation(len(y))) for _ in range(4)]).astype(float)
    assert np.allclose(statistic(batch), [statistic(row) for row in batch])


@given(seed=seeds, shift=st.floats(-50, 50))
@HYP
def test_the_statistic_is_translation_invariant_and_small_for_tight_clusters(seed, shift):
    g = torch.Generator().manual_seed(seed)
    y = labels(seed, 4, per_class=10)
    centres = 10 * torch.eye(4, 6)
    f = (centres[y] + 0.01 * torch.randn(len(y), 6, generator=g)).double()
    half = hf.split_halves(y, 4)
    statistic, _ = hf.split_half_statistic(f, y, half, 4)
    moved, _ = hf.split_half_statistic(f + shift, y, half, 4)
    idx = np.arange(len(y), dtype=float)
    assert statistic(idx) < 0.01
    assert math.isclose(statistic(idx), moved(idx), rel_tol=1e-6, abs_tol=1e-9)


# ---------------------------------------------------------------------------------------------
# HF-4's spectrum correlation


@given(r=radii, c=st.integers(1, 3))
@HYP
def test_the_high_band_keeps_exactly_the_frequencies_beyond_the_radius(r, c):
    amplitude = torch.rand(2, c, 8, 8)
    band = hf.high_band(amplitude, r)
    assert band.shape == (2, c * int((radial_distance(8, 8) > r).sum()))


@given(seed=seeds, scale=scales)
@HYP
def test_a_perturbation_shaped_like_a_class_correlates_best_with_that_class(seed, scale):
    g = torch.Generator().manual_seed(seed)
    k = 3
    patterns = torch.rand(k, 1, 8, 8, generator=g)
    y = torch.arange(k).repeat_interleave(5)
    images = patterns[y] + 0.01 * torch.rand(len(y), 1, 8, 8, generator=g)
    corr = hf.spectrum_correlations(scale * (patterns - 0.5), images, y, k, radius=1.5)
    assert corr.shape == (k, k)
    assert (corr.abs() <= 1 + 1e-9).all()
    assert corr.argmax(1).equal(torch.arange(k))


def test_the_checked_radii_run_from_an_eighth_to_three_eighths_of_the_side():
    assert hf.split_radii(28) == list(range(4, 11))
    assert hf.split_radii(32) == list(range(4, 13))


# ---------------------------------------------------------------------------------------------
# the analyses end to end on a net whose answer we know: it classifies by mean brightness


class BrightnessNet(torch.nn.Module):
    """Stages named as ResNet-18's (so the hooks find them); class c = brightness level c of K."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.conv1 = torch.nn.Conv2d(1, 2, 1)
        self.layer0 = torch.nn.ReLU()
        self.layer1 = torch.nn.Identity()
        self.layer2 = torch.nn.AvgPool2d(2)
        self.layer3 = torch.nn.AvgPool2d(2)
        self.layer4 = torch.nn.AvgPool2d(3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv1.bias.zero_()

    def forward(self, x):
        z = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(self.conv1(x))))))
        level = (z[:, 0] - z[:, 1]).mean((-2, -1)) * (self.k - 1)
        return -(level[:, None] - torch.arange(self.k, dtype=x.dtype)) ** 2


@pytest.fixture(scope="module")
def brightness():
    k = 3
    net = BrightnessNet(k).eval()
    model = TrainedModel("STD", net, {}, "brightness", {}, False)
    y = torch.arange(k).repeat(8)
    noise = 0.05 * torch.rand(len(y), 1, 12, 12, generator=torch.Generator().manual_seed(1))
    x = (y.view(-1, 1, 1, 1) / (k - 1) * 0.8 + 0.1 + noise).clamp(0, 1)
    target = hf.draw_targets(y, k)
    x_adv = torch.stack([x[(y == t).nonzero().flatten()[0]] for t in target.tolist()])  # lands on the target
    return model, hf.TargetedSet("stand-in", {}, "STD", x, x_adv, y, {}, target=target)


def test_the_trajectory_ends_at_the_target_when_the_attack_lands_on_a_target_image(brightness):
    model, tset = brightness
    m = hf.feature_trajectories(model, tset, num_classes=3)
    assert m.n == len(tset.y) and all(e.finite for e in m.statistics.values())
    assert m.statistics["nearer_target_fraction_layer4"].value == 1.0
    assert all(r["mean_log_ratio"] < 0 for r in m.tables["trajectory"])


def test_the_frequency_split_gives_all_of_delta_to_the_low_part_at_the_full_radius(brightness):
    model, tset = brightness
    m = hf.frequency_split_success(model, tset)
    rows = m.tables["split_success"]
    assert [r["radius"] for r in rows] == list(range(len(rows)))
    assert rows[-1]["success_low"] == 1.0 and rows[-1]["success_high"] == 0.0
    assert rows[0]["success_low"] == 1.0  # a brightness classifier's attack lives in the mean (DC) alone
    assert m.statistics["min_success_high_minus_low"].value < 0  # so HF-3's statistic says so


def test_the_spectrum_analysis_counts_target_first_against_chance(brightness):
    model, tset = brightness
    m = hf.target_spectrum_correlation(model, tset, num_classes=3, radius=2)
    est = m.statistics["target_first_rate_minus_chance"]
    assert est.confidence == 0.98 and est.finite
    assert math.isclose(est.value + 1 / 3, m.tables["summary"][0]["target_first_rate"])
    assert 0 <= m.tests["binomial"].pvalue <= 1
