"""The information bottleneck's two fitting paths (issue 24): the CPU path unchanged to the bit, the vectorised
path (the default off the CPU: several fitting batches per Adam run, noise drawn on the features' device) equal per
image to each batch fitted alone with the same noise, without a host copy per step, and keyed apart from CPU fits."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advclaims import models
from advclaims.analysis.info_bottleneck import bottleneck
from advclaims.analysis.info_bottleneck.bottleneck import (FIT_GROUP, Split, fit_channel_masks, fit_fields,
                                                           split_at_last_conv_block, vectorised_on)
from advclaims.analysis.info_bottleneck.suite import EvaluationSuite
from advclaims.attacks import frozen
from advclaims.checkpoints import keys

NUM_CLASSES = 4


# ---------------------------------------------------------------------------------------------
# today's algorithm, frozen (fit_channel_masks as of commit 2162194), with an optional noise source


def frozen_fit(split, z, y, *, beta=0.3, steps=200, lr=0.1, batch_size=100, seed=0, noise_of=None):
    """fit_channel_masks before issue 24, verbatim but for ``noise_of(batch_start, step, shape)``, which stands in
    for the CPU generator's draw when given."""
    generator = torch.Generator().manual_seed(seed)
    robust, sigmas, thresholds = [], [], []
    with frozen(split.model):
        for start in range(0, len(z), batch_size):
            zb, yb = z[start:start + batch_size].detach(), y[start:start + batch_size]
            var_z = zb.var(dim=(2, 3))
            lam = torch.zeros(zb.shape[0], zb.shape[1], 1, 1, device=zb.device, requires_grad=True)
            optimizer = torch.optim.Adam([lam], lr=lr)
            for step in range(steps):
                sigma = F.softplus(lam)
                if noise_of is None:
                    noise = torch.randn(lam.shape, generator=generator).to(zb.device)
                else:
                    noise = noise_of(start, step, lam.shape)
                q = sigma[:, :, 0, 0].pow(2)
                kl = (0.5 * (var_z / (q + 1e-10) + torch.log((q + 1e-10) / (var_z + 1e-10)) - 1)).mean()
                loss = F.cross_entropy(split.tail(zb + sigma * noise), yb) + beta * kl
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sigma = F.softplus(lam.detach())[:, :, 0, 0]
            threshold = var_z.max()
            robust.append(sigma.pow(2) > threshold)
            sigmas.append(sigma)
            thresholds.append(threshold.expand(zb.shape[0]))
    return torch.cat(robust), torch.cat(sigmas), torch.cat(thresholds)


def tiny_split() -> Split:
    """Features given directly (encode = identity), tail = average pool + linear."""
    torch.manual_seed(1)
    tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, NUM_CLASSES))
    return Split(tail, lambda z: z, tail, "identity encoder")


def vgg_case(n: int):
    """A width-1 VGG-16-BN on 28-pixel single-channel images, cut at the authors' point: Z is (n, 8, 3, 3)."""
    torch.manual_seed(0)
    net = models.build("vgg16_bn", in_channels=1, num_classes=NUM_CLASSES, width=1).eval()
    split = split_at_last_conv_block(net)
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)
    with torch.no_grad():
        z = split.encode(x)
    return split, z, y


def features_case(n: int, seed: int = 3, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 3, 3, generator=g) * scale, torch.randint(0, NUM_CLASSES, (n,), generator=g)


# ---------------------------------------------------------------------------------------------
# (1) the CPU path: bit-identical to today's


@pytest.mark.parametrize("case", ["tiny", "vgg"])
@pytest.mark.parametrize("vectorised", [None, False])
def test_the_cpu_fit_is_bit_identical_to_the_frozen_algorithm(case, vectorised):
    # 11 images in batches of 4: a ragged last batch; None is the default, which on the CPU is the per-batch path
    if case == "tiny":
        split, (z, y) = tiny_split(), features_case(11, scale=0.3)
        steps, beta = 40, 0.3
    else:
        split, z, y = vgg_case(11)
        steps, beta = 15, 3.0
    masks = fit_channel_masks(split, z, y, beta=beta, steps=steps, batch_size=4, seed=7, vectorised=vectorised)
    robust, sigma, threshold = frozen_fit(split, z, y, beta=beta, steps=steps, batch_size=4, seed=7)
    assert torch.equal(masks.sigma, sigma) and torch.equal(masks.threshold, threshold)
    assert torch.equal(masks.robust, robust)
    assert not torch.allclose(sigma, F.softplus(torch.zeros(())).expand_as(sigma))  # the fit moved sigma
    assert 0 < int(robust.sum()) < robust.numel() or case == "vgg"  # the tiny case's masks are mixed


# ---------------------------------------------------------------------------------------------
# (2) the vectorised path: each batch's result is its own, up to float rounding


class DrawLog:
    """Wraps torch.randn: records every draw made with a generator (its device, the device asked for, the tensor)."""

    def __init__(self, monkeypatch):
        self.calls = []
        self._randn = torch.randn
        monkeypatch.setattr(torch, "randn", self)

    def __call__(self, *args, **kwargs):
        out = self._randn(*args, **kwargs)
        if kwargs.get("generator") is not None:
            self.calls.append((kwargs["generator"].device, kwargs.get("device"), out))
        return out


@pytest.mark.parametrize("case", ["tiny", "vgg"])
def test_the_vectorised_fit_equals_each_batch_fitted_alone_with_the_same_noise(case, monkeypatch):
    n, batch_size, group, steps = 13, 3, 2, 25  # batches [0:3] ... [12:13]; groups of 6, 6 and 1 images
    split, z, y = (tiny_split(), *features_case(n)) if case == "tiny" else vgg_case(n)
    log = DrawLog(monkeypatch)
    fitted = fit_channel_masks(split, z, y, beta=0.3, steps=steps, batch_size=batch_size, seed=2, vectorised=True,
                               group=group)
    monkeypatch.undo()
    span = batch_size * group
    assert len(log.calls) == steps * -(-n // span)  # one draw per step and group, group after group
    draws = [out for _, _, out in log.calls]

    def noise_of(start, step, shape):  # the slice of its group's draw that the batch at ``start`` got
        g, offset = divmod(start, span)
        out = draws[g * steps + step][offset:offset + shape[0]]
        assert out.shape == shape
        return out

    robust, sigma, threshold = frozen_fit(split, z, y, beta=0.3, steps=steps, batch_size=batch_size, noise_of=noise_of)
    assert torch.equal(fitted.threshold, threshold)
    torch.testing.assert_close(fitted.sigma, sigma, rtol=1e-5, atol=1e-6)
    clear = (sigma.pow(2) - threshold[:, None]).abs() > 1e-4  # away from the boundary, rounding cannot flip a mask
    assert torch.equal(fitted.robust[clear], robust[clear])
    assert torch.equal(fitted.robust, fitted.sigma.pow(2) > fitted.threshold[:, None])


def test_the_vectorised_fit_follows_its_seed():
    split, (z, y) = tiny_split(), features_case(9)
    a = fit_channel_masks(split, z, y, steps=10, batch_size=4, seed=4, vectorised=True)
    b = fit_channel_masks(split, z, y, steps=10, batch_size=4, seed=4, vectorised=True)
    c = fit_channel_masks(split, z, y, steps=10, batch_size=4, seed=5, vectorised=True)
    assert torch.equal(a.sigma, b.sigma) and torch.equal(a.robust, b.robust)
    assert not torch.equal(a.sigma, c.sigma)


# ---------------------------------------------------------------------------------------------
# (3) no host copy per step on the vectorised path


class ToCount:
    """Counts Tensor.to / .cuda / .copy_ calls (the ways a host tensor reaches a device)."""

    def __init__(self, monkeypatch):
        self.n = 0
        for name in ("to", "cuda", "copy_"):
            monkeypatch.setattr(torch.Tensor, name, self._counted(getattr(torch.Tensor, name)))

    def _counted(self, method):
        def wrapper(t, *args, **kwargs):
            self.n += 1
            return method(t, *args, **kwargs)
        return wrapper


@pytest.mark.parametrize("steps", [3, 9])
def test_the_vectorised_fit_draws_on_the_features_device_with_no_copy_per_step(steps, monkeypatch):
    split, (z, y) = tiny_split(), features_case(10)
    log = DrawLog(monkeypatch)
    fit_channel_masks(split, z, y, steps=steps, batch_size=4, vectorised=True)
    assert len(log.calls) == steps  # 3 batches, one group: one draw per step
    for generator_device, device, _ in log.calls:
        assert generator_device == z.device and device == z.device  # a device generator, drawn where z is
    monkeypatch.undo()

    def copies(vectorised: bool, steps: int) -> int:
        with pytest.MonkeyPatch.context() as mp:
            count = ToCount(mp)
            fit_channel_masks(split, z, y, steps=steps, batch_size=4, vectorised=vectorised)
            return count.n

    assert copies(True, steps) == copies(True, 0)  # nothing is copied per step
    assert copies(False, steps) - copies(False, 0) == 3 * steps  # the CPU path's noise .to(device), per batch


# ---------------------------------------------------------------------------------------------
# the store key: a vectorised fit is keyed apart, a CPU fit's key is what it was


def test_fit_fields_key_the_vectorised_fit_and_nothing_on_the_cpu():
    assert fit_fields("cpu") == {} and not vectorised_on("cpu")
    assert fit_fields(torch.device("cuda", 1)) == {"noise": "cuda", "fit_group": FIT_GROUP} and vectorised_on("cuda:1")
    assert fit_fields("mps") == {"noise": "mps", "fit_group": FIT_GROUP}


class _Made(Exception):
    pass


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_suites_mask_key_names_the_device_fit_and_keeps_the_cpu_key(device, monkeypatch):
    """EvaluationSuite.masks' fields: on the CPU exactly those of every stored CPU fit (the key of the stored smoke
    Fashion-MNIST clean masks of ADV VGG-16, seed 0, is a2f5081ad3fbbc8ff0c0); on CUDA with the vectorised fit's
    fields, and make() asks fit_channel_masks for the path its key names."""
    seen = {}

    def cached(kind, fields, make):
        seen["kind"], seen["fields"] = kind, fields
        make()

    def fake_fit(*args, **kwargs):
        seen["vectorised"] = kwargs["vectorised"]
        raise _Made

    monkeypatch.setattr("advclaims.analysis.info_bottleneck.suite.fit_channel_masks", fake_fit)
    suite = object.__new__(EvaluationSuite)
    suite.pipeline = SimpleNamespace(device=torch.device(device), cached=cached,
                                     budget=SimpleNamespace(test_n=500, test_images=lambda dataset: 500, eval_batch=500,
                                                            iterations=lambda n: n))
    suite.model, suite.dataset, suite.seed = SimpleNamespace(key="3f023f247d1bec336eee"), "fashion_mnist", 0
    suite.x, suite.y = torch.zeros(2, 3, 3, 3), torch.zeros(2, dtype=torch.long)
    suite.split = Split(nn.Identity(), lambda x: x, lambda z: z, "identity")
    with pytest.raises(_Made):
        suite.masks("clean")
    assert seen["kind"] == "ib_masks" and seen["vectorised"] == (device == "cuda")
    cpu_fields = {"model": "3f023f247d1bec336eee", "dataset": "fashion_mnist", "test_n": 500, "seed": 0,
                  "on": "clean", "beta": 0.3, "fit_batch": 100, "labels": "true"}
    if device == "cpu":
        assert seen["fields"] == cpu_fields
        assert keys.key_of(keys.spec("ib_masks", seen["fields"], {"precision": "fp32"})) == "a2f5081ad3fbbc8ff0c0"
    else:
        assert seen["fields"] == {**cpu_fields, "noise": "cuda", "fit_group": FIT_GROUP}


def test_the_module_constants_are_the_ones_the_key_names():
    assert bottleneck.FIT_GROUP == FIT_GROUP >= 1 and bottleneck.FIT_BATCH == 100
