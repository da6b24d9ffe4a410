"""Frequency tools: the invariants of docs/claims.md (identity, linearity, Parseval) and the radii."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advclaims.analysis import frequency as F

sizes = st.integers(2, 12)
radii = st.floats(0, 20)
weights = st.floats(0, 1)
seeds = st.integers(0, 2**16)


def images(seed, n=2, c=2, h=8, w=8):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@given(h=sizes, w=sizes, r=radii, outside=weights, seed=seeds)
@settings(deadline=None, max_examples=60)
def test_low_pass_plus_high_pass_is_the_identity(h, w, r, outside, seed):
    x = images(seed, h=h, w=w)
    assert torch.allclose(F.low_pass(x, r, outside=outside) + F.high_pass(x, r, outside=outside), x, atol=1e-5)


@given(r=radii, a=st.floats(-3, 3), b=st.floats(-3, 3), seed=seeds)
@settings(deadline=None, max_examples=40)
def test_the_filters_are_linear(r, a, b, seed):
    x, y = images(seed), images(seed + 1)
    for f in (F.low_pass, F.high_pass):
        assert torch.allclose(f(a * x + b * y, r), a * f(x, r) + b * f(y, r), atol=1e-4)


@given(h=sizes, w=sizes, seed=seeds)
@settings(deadline=None, max_examples=40)
def test_parseval_holds_for_the_centred_spectrum(h, w, seed):
    x = images(seed, h=h, w=w)
    energy_pixels = (x ** 2).sum(dim=(-2, -1))
    energy_freq = (F.spectrum(x).abs() ** 2).sum(dim=(-2, -1)) / (h * w)
    assert torch.allclose(energy_pixels, energy_freq, rtol=1e-4)


@given(h=sizes, w=sizes, seed=seeds)
@settings(deadline=None, max_examples=30)
def test_the_full_radius_keeps_everything_and_radius_zero_keeps_only_the_mean(h, w, seed):
    x = images(seed, h=h, w=w)
    assert torch.allclose(F.low_pass(x, F.full_radius(h, w)), x, atol=1e-5)
    dc = F.low_pass(x, 0)
    assert torch.allclose(dc, x.mean(dim=(-2, -1), keepdim=True).expand_as(x), atol=1e-5)


def test_the_low_pass_of_a_constant_image_is_itself_at_every_radius():
    x = torch.full((1, 3, 9, 9), 0.3)
    for r in (0, 1, 2.5, 7):
        assert torch.allclose(F.low_pass(x, r), x, atol=1e-6)


def test_swap_takes_low_from_one_and_high_from_the_other():
    x, y = images(1), images(2)
    s = F.swap(x, y, 2)
    assert torch.allclose(F.low_pass(s, 2), F.low_pass(x, 2), atol=1e-5)
    assert torch.allclose(F.high_pass(s, 2), F.high_pass(y, 2), atol=1e-5)


def test_outside_weight_half_matches_wang_et_al_helper_convention():
    x = images(3)
    half = F.low_pass(x, 1, outside=0.5)
    assert torch.allclose(half, 0.5 * x + 0.5 * F.low_pass(x, 1), atol=1e-5)


def test_band_means_split_inner_and_outer():
    values = F.radial_distance(8, 8).expand(2, 8, 8)
    inner, outer = F.band_means(values, 2)
    assert (inner < outer).all() and inner.shape == (2,)


def test_negative_radius_is_rejected():
    try:
        F.low_pass(images(0), -1)
    except ValueError as err:
        assert "radius" in str(err)
    else:
        raise AssertionError("negative radius accepted")


def test_full_radius_is_the_corner_distance():
    assert F.full_radius(32, 32) == math.ceil(math.hypot(16, 16))
    assert F.full_radius(28, 28) == 20


@given(h=sizes, w=sizes, r=radii, outside=weights, seed=seeds)
@settings(deadline=None, max_examples=40)
def test_the_filters_equal_masking_the_centred_spectrum(h, w, r, outside, seed):
    """low_pass / high_pass shift the mask instead of the batch's spectrum: the same values, bit for bit."""
    x = images(seed, h=h, w=w)
    mask = F.low_pass_mask(h, w, r, outside=outside)
    assert torch.equal(F.low_pass(x, r, outside=outside), F.inverse(F.spectrum(x) * mask))
    assert torch.equal(F.high_pass(x, r, outside=outside), F.inverse(F.spectrum(x) * (1 - mask)))
