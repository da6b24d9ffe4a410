"""Tests for advclaims.models: every registered architecture, the registry's checks, ResNet-18's stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from advclaims import models
from advclaims.models import Normalize, RESNET_STAGES

# ---------------------------------------------------------------------------------------------
# hypothesis strategies (named once)

pixels = st.floats(0.0, 1.0, width=32)
channel_counts = st.sampled_from([1, 3])
pixel_pairs = channel_counts.flatmap(
    lambda c: st.tuples(
        st.just(c),
        hnp.arrays(np.float32, (2, c, 6, 6), elements=pixels),
        hnp.arrays(np.float32, (2, c, 6, 6), elements=pixels),
    )
)
means = st.floats(-1.0, 1.0, width=32)
stds = st.floats(0.0625, 2.0, width=32)
norm_params = channel_counts.flatmap(
    lambda c: st.tuples(st.lists(means, min_size=c, max_size=c), st.lists(stds, min_size=c, max_size=c),
                        hnp.arrays(np.float32, (2, c, 3, 3), elements=pixels))
)
batch_sizes = st.integers(2, 4)
seeds = st.integers(0, 2**31 - 1)
bias_free_stems = st.sampled_from(["resnet18", "preact_resnet18", "wrn28_10"])

HYP = settings(deadline=None, max_examples=25)

# ---------------------------------------------------------------------------------------------
# helpers

SMALL_WIDTH = {"resnet18": 4, "preact_resnet18": 4, "vgg16_bn": 4, "wrn28_10": 1, "nin": 8, "lenet": 4}
# channel count of features(x) as a function of width: documents what "width" means per model
FEATURE_CHANNELS = {
    "resnet18": lambda w: 8 * w, "preact_resnet18": lambda w: 8 * w, "vgg16_bn": lambda w: 8 * w,
    "wrn28_10": lambda w: 64 * w, "nin": lambda w: w, "lenet": lambda w: int(2.5 * w),
}
INPUTS = [(1, 28), (3, 32)]
NUM_CLASSES = 7  # not 10, so a hard-coded class count shows
CASES = [pytest.param(name, c, s, id=f"{name}-{c}x{s}") for name in models.names() for c, s in INPUTS]


def make(name, c, s, *, width=None, seed=0, num_classes=NUM_CLASSES, calibrate=True):
    """A small model; ``calibrate`` sets BatchNorm running statistics from random inputs.

    Fresh BatchNorm layers in eval mode are identities, and through 13 narrow conv layers (VGG) the
    signal then decays until the logits no longer depend on the input; calibrated statistics keep
    eval-mode outputs input-dependent, as in a trained model.
    """
    torch.manual_seed(seed)
    mean = tuple(0.1 + 0.2 * i for i in range(c))
    std = tuple(0.25 + 0.1 * i for i in range(c))
    m = models.build(name, in_channels=c, num_classes=num_classes, width=width or SMALL_WIDTH[name],
                     mean=mean, std=std, input_size=s)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    if calibrate and bns:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        m.train()
        with torch.no_grad():
            m(rand_x(16, c, s, seed=1000 + seed))
        for bn in bns:
            bn.momentum = 0.1
    return m.eval()


def rand_x(n, c, s, seed=0):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny convolutions on a 2-core machine run ~100x slower with two OpenMP threads than with one
    # (thread hand-off dominates); restore the setting for whatever runs after this module.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registry_names():
    assert models.names() == sorted(["resnet18", "preact_resnet18", "vgg16_bn", "wrn28_10", "nin", "lenet"])
    assert set(models.DEFAULT_WIDTH) == set(models.names())


# ---------------------------------------------------------------------------------------------
# every model, both input formats


@pytest.mark.parametrize("name, c, s", CASES)
def test_forward_shape_finite_and_head_of_features(name, c, s):
    m = make(name, c, s).eval()
    x = rand_x(3, c, s)
    with torch.no_grad():
        out = m(x)
        z = m.features(x)
        via_head = m.head(z)
    assert out.shape == (3, NUM_CLASSES) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert z.dim() == 4 and z.shape[0] == 3 and z.shape[1] == FEATURE_CHANNELS[name](SMALL_WIDTH[name])
    assert torch.allclose(via_head, out, atol=1e-6, rtol=1e-5)
    # outputs depend on the input, and per example
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name, c, s", CASES)
def test_normalisation_is_inside_and_applied_once(name, c, s):
    m = make(name, c, s).eval()
    assert isinstance(m.normalize, Normalize)
    mean = torch.tensor([0.1 + 0.2 * i for i in range(c)]).view(1, c, 1, 1)
    std = torch.tensor([0.25 + 0.1 * i for i in range(c)]).view(1, c, 1, 1)
    assert torch.allclose(m.normalize.mean, mean) and torch.allclose(m.normalize.std, std)
    x = rand_x(2, c, s)
    with torch.no_grad():
        out = m(x)
        m.normalize = nn.Identity()  # the raw layers
        raw = m(x)
        renormalised = m((x - mean) / std)
    assert not torch.allclose(out, raw, atol=1e-4)
    assert torch.allclose(out, renormalised, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, c, s", CASES)
def test_wrong_channel_count_is_rejected(name, c, s):
    m = make(name, c, s).eval()
    with pytest.raises(ValueError, match=rf"\(N, {c}, H, W\)"):
        m(rand_x(1, c + 1, s))
    with pytest.raises(ValueError, match=rf"\(N, {c}, H, W\)"):
        m(torch.rand(c, s, s))  # a single image without the batch dimension


@pytest.mark.parametrize("name, c, s", CASES)
def test_train_and_eval_modes(name, c, s):
    m = make(name, c, s, calibrate=False)
    x = rand_x(4, c, s, seed=1).requires_grad_(True)
    bn_before = {k: v.clone() for k, v in m.state_dict().items() if "running_mean" in k}
    m.train()
    out = m(x)
    assert out.shape == (4, NUM_CLASSES) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    missing = [k for k, p in m.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    for k, v in m.state_dict().items():
        if k in bn_before:
            assert not torch.equal(v, bn_before[k]), f"{k} not updated in train mode"
    m.eval()
    with torch.no_grad():
        e1, e2 = m(x.detach()), m(x.detach())
        single = m(x.detach()[:1])
    assert torch.equal(e1, e2)  # eval is deterministic (dropout off, running statistics)
    assert torch.allclose(single, e1[:1], atol=1e-5, rtol=1e-4)  # eval output does not depend on the batch


# ---------------------------------------------------------------------------------------------
# build's checks


def test_build_rejects_unknown_name():
    with pytest.raises(ValueError) as ei:
        models.build("resnet19", in_channels=3, num_classes=10)
    msg = str(ei.value)
    assert "resnet19" in msg
    assert all(n in msg for n in models.names())


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=0, num_classes=10),
    dict(in_channels=-3, num_classes=10),
    dict(in_channels=3, num_classes=1),
    dict(in_channels=3, num_classes=10, mean=(0.5,), std=(0.5, 0.5, 0.5)),
    dict(in_channels=3, num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5)),
    dict(in_channels=1, num_classes=10, mean=(0.5, 0.5), std=(0.5, 0.5)),
], ids=["in0", "in-neg", "classes1", "mean-short", "std-short", "both-too-long"])
def test_build_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        models.build("resnet18", width=2, **kwargs)


def test_build_defaults():
    m = models.build("lenet", in_channels=3, num_classes=10)  # default width, mean, std, input size 32
    assert torch.equal(m.normalize.mean.flatten(), torch.full((3,), 0.5))
    assert torch.equal(m.normalize.std.flatten(), torch.full((3,), 0.5))
    assert m.features(torch.rand(1, 3, 32, 32)).shape[1] == FEATURE_CHANNELS["lenet"](models.DEFAULT_WIDTH["lenet"])
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------
# ResNet-18


@pytest.mark.parametrize("s, sizes", [(28, [28, 28, 28, 14, 7, 4]), (32, [32, 32, 32, 16, 8, 4])])
def test_resnet18_stage_hooks(s, sizes):
    assert RESNET_STAGES == ("conv1", "layer0", "layer1", "layer2", "layer3", "layer4")
    w = 4
    c = 1 if s == 28 else 3
    m = make("resnet18", c, s, width=w).eval()
    fired, kept = [], []

    def hook(name):
        def fn(_module, _inp, out):
            fired.append((name, tuple(out.shape)))
            kept.append((out, out.detach().clone()))
        return fn

    handles = [getattr(m, st_).register_forward_hook(hook(st_)) for st_ in RESNET_STAGES]
    with torch.no_grad():
        m(rand_x(2, c, s))
    for h in handles:
        h.remove()
    assert [n for n, _ in fired] == list(RESNET_STAGES)
    assert [shape[2] for _, shape in fired] == sizes and [shape[3] for _, shape in fired] == sizes
    assert [shape[1] for _, shape in fired] == [w, w, w, 2 * w, 4 * w, 8 * w]
    # nothing downstream modified a hooked output in place
    for out, snapshot in kept:
        assert torch.equal(out, snapshot)
    # layer0 is BN + ReLU of conv1: non-negative
    assert kept[1][0].min() >= 0


def test_paper_resnet18_parameter_count():
    m = models.build("resnet18", in_channels=3, num_classes=10, width=64)
    assert abs(n_params(m) - 11.17e6) / 11.17e6 < 0.01
    p = models.build("preact_resnet18", in_channels=3, num_classes=10, width=64)
    assert abs(n_params(p) - 11.17e6) / 11.17e6 < 0.01


def test_wrn28_10_parameter_count():
    m = models.build("wrn28_10", in_channels=3, num_classes=10, width=10)  # no forward at full width
    assert abs(n_params(m) - 36.5e6) / 36.5e6 < 0.02
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3)]
    assert len(convs) == 1 + 3 * 4 * 2  # stem + 3 stages x 4 blocks x 2 convs = 25 (+ fc, + shortcuts) = depth 28


def test_vgg16_bn_parameter_count_and_layers():
    m = models.build("vgg16_bn", in_channels=3, num_classes=10, width=64)
    # 13 conv layers (14.71M incl. BN) plus one 512 -> 10 linear layer: 14,728,266
    assert 14.70e6 < n_params(m) < 14.76e6
    assert sum(isinstance(mod, nn.Conv2d) for mod in m.modules()) == 13
    assert sum(isinstance(mod, nn.BatchNorm2d) for mod in m.modules()) == 13
    assert [mod.out_features for mod in m.modules() if isinstance(mod, nn.Linear)] == [10]


# ---------------------------------------------------------------------------------------------
# property tests


@HYP
@given(stem=bias_free_stems, data=pixel_pairs)
def test_conv1_response_difference_is_linear(stem, data):
    c, x_np, xh_np = data
    m = make(stem, c, 32, width=2 if stem != "wrn28_10" else 1).eval()
    assert m.conv1.bias is None
    x, xh = torch.from_numpy(x_np), torch.from_numpy(xh_np)
    with torch.no_grad():
        diff = m.conv1(m.normalize(xh)) - m.conv1(m.normalize(x))
        direct = m.conv1((xh - x) / m.normalize.std)
    assert torch.allclose(diff, direct, atol=1e-5, rtol=1e-4)


@HYP
@given(params=norm_params)
def test_normalize_is_per_channel_affine(params):
    mean, std, x_np = params
    layer = Normalize(tuple(mean), tuple(std))
    x = torch.from_numpy(x_np)
    y = layer(x)
    for ch in range(x.shape[1]):
        expected = (x[:, ch] - np.float32(mean[ch])) / np.float32(std[ch])
        assert torch.allclose(y[:, ch], expected, atol=1e-6, rtol=1e-6)
    assert torch.allclose(y * layer.std + layer.mean, x, atol=1e-5)


@HYP
@given(name=st.sampled_from(models.names()), n=batch_sizes, seed=seeds)
def test_eval_outputs_are_per_example(name, n, seed):
    m = make(name, 3, 32, seed=seed % 1000).eval()
    x = rand_x(n, 3, 32, seed=seed)
    with torch.no_grad():
        batch = m(x)
        rows = torch.cat([m(x[i:i + 1]) for i in range(n)])
        flipped = m(x.flip(0)).flip(0)
    assert torch.allclose(batch, rows, atol=1e-5, rtol=1e-4)
    assert torch.allclose(batch, flipped, atol=1e-5, rtol=1e-4)
