"""The attacks' fast forward (attacks._common.fast_model) computes the model's logits, only faster.

BatchNorm folding and channels_last are exact in real arithmetic: fused logits must equal the
model's to float rounding for any conv/BatchNorm configuration, PGD through them must equal the
plain loop, the folded weights must follow the model's weights when they change, and every case
the rewrite cannot prove safe must run the model itself.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advclaims import models
from advclaims.attacks import frozen, pgd, project_linf
from advclaims.attacks.fastpath import FastForward, fast_model

LOGIT_RTOL = 1e-4


def examples(n: int) -> int:
    """n examples under hypothesis' default profile (100), proportionally fewer under 'ci'."""
    return max(3, n * settings.default.max_examples // 100)


def randomise_batchnorms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial eval statistics and affine parameters, so a wrong fold shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=g))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                    m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def fast_of(model: nn.Module, x: torch.Tensor) -> nn.Module:
    with frozen(model):
        return fast_model(model, x)


def batchnorms_run(fast: nn.Module) -> int:
    """BatchNorm2d modules still executed by the fast forward."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def assert_same_logits(model: nn.Module, fast: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        reference, logits = model(x), fast(x)
    scale = max(1.0, float(reference.abs().max()))
    assert float((logits - reference).abs().max()) <= LOGIT_RTOL * scale


@st.composite
def conv_bn_nets(draw):
    """Conv -> BatchNorm -> ReLU blocks of random shape (groups, stride, padding, bias, affine), a head."""
    seed = draw(st.integers(0, 2**31 - 1))
    channels = draw(st.sampled_from([1, 3]))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layers, cin = [models.Normalize((0.5,) * channels, (0.25,) * channels)], channels
        for _ in range(draw(st.integers(1, 3))):
            groups = draw(st.sampled_from([1, 2])) if cin % 2 == 0 else 1
            cout = groups * draw(st.integers(1, 4))
            kernel = draw(st.sampled_from([1, 3]))  # padding kernel // 2: a 9x9 image stays >= 2x2 after 3 strides
            layers += [nn.Conv2d(cin, cout, kernel, stride=draw(st.sampled_from([1, 2])), padding=kernel // 2,
                                 groups=groups, bias=draw(st.booleans()),
                                 padding_mode=draw(st.sampled_from(["zeros", "reflect"]))),
                       nn.BatchNorm2d(cout, affine=draw(st.booleans())), nn.ReLU()]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * cin, 5)]
    model = randomise_batchnorms(nn.Sequential(*layers), seed)
    x = torch.rand(draw(st.integers(1, 4)), channels, 9, 9, generator=torch.Generator().manual_seed(seed))
    return model, x


@settings(deadline=None, max_examples=examples(40))
@given(net_and_x=conv_bn_nets())
def test_folded_logits_equal_the_models_for_any_conv_batchnorm_net(net_and_x):
    model, x = net_and_x
    fast = fast_of(model, x)
    assert isinstance(fast, FastForward) and batchnorms_run(fast) == 0, "every conv -> BatchNorm pair folds"
    assert_same_logits(model, fast, x)


@settings(deadline=None, max_examples=examples(20))
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 5), targeted=st.booleans())
def test_pgd_through_the_fast_forward_equals_the_plain_loop(seed, steps, targeted):
    # float64, so the rewrite's rounding cannot flip the sign of a gradient component
    model = randomise_batchnorms(models.build("resnet18", in_channels=3, num_classes=10, width=2, input_size=8),
                                 seed).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (3,), generator=g)
    start = (torch.rand(x.shape, generator=g, dtype=torch.float64) - 0.5) * 0.1
    eps, alpha, sign = 0.05, 0.0125, (-1.0 if targeted else 1.0)
    expected = project_linf(x + start, x, eps)
    for _ in range(steps):
        expected.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(expected), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, expected)
        expected = project_linf(expected.detach() + sign * alpha * grad.sign(), x, eps)
    got = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, targeted=targeted, init=start)
    assert batchnorms_run(fast_of(model, x)) == 0
    assert got.is_contiguous()
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def test_float32_input_gradients_of_the_fast_forward_match_the_models():
    model = randomise_batchnorms(models.build("resnet18", in_channels=3, num_classes=10, width=4), seed=0)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 10
    grads = []
    for forward in (model, fast_of(model, x)):
        point = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(nn.functional.cross_entropy(forward(point), y, reduction="sum"), point)[0])
    assert torch.allclose(grads[1], grads[0], rtol=1e-3, atol=1e-3 * float(grads[0].abs().max()))


def test_folded_weights_follow_the_models_weights_statistics_and_modules():
    model = randomise_batchnorms(models.build("resnet18", in_channels=3, num_classes=10, width=2, input_size=8), 0)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    first = fast_of(model, x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    nn.functional.cross_entropy(model(x), torch.arange(4)).backward()  # also moves the running statistics
    optimizer.step()
    model.eval()
    assert_same_logits(model, fast_of(model, x), x)
    other = randomise_batchnorms(models.build("resnet18", in_channels=3, num_classes=10, width=2, input_size=8), 7)
    model.load_state_dict(other.state_dict())
    assert_same_logits(model, fast_of(model, x), x)
    model.fc = nn.Linear(model.fc.in_features, 10)
    rebuilt = fast_of(model, x)
    assert rebuilt.body is not first.body, "a replaced module rebuilds the copy"
    assert_same_logits(model, rebuilt, x)


class ConvUsedTwice(nn.Module):
    """bn(conv(x)) + conv(x): folding would change the second use."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

    def forward(self, x):
        out = self.conv(x)
        return self.head(self.bn(out) + out)


class SharedConv(nn.Module):
    """One conv called twice, each time before a different BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2), nn.BatchNorm2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

    def forward(self, x):
        return self.head(self.bn2(self.conv(torch.relu(self.bn1(self.conv(x))))))


class MaskedByConv(nn.Module):
    """bn(c) * (c > 0): a non-differentiable use of the conv output that only the logits check sees."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(3))

    def forward(self, x):
        out = self.conv(x)
        return self.head(self.bn(out) * (out > 0))


class ViewAfterConv(nn.Module):
    """``.view`` of a conv output: valid in NCHW, an error in channels_last."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 4, 3), nn.LazyLinear(3)

    def forward(self, x):
        out = self.conv(x)
        return self.fc(out.view(out.shape[0], -1))


def built(cls, channels: int = 1) -> tuple[nn.Module, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = cls()
        x = torch.rand(4, channels, 6, 6)
    model(x)  # materialise the lazy head
    return randomise_batchnorms(model, 0), x


@pytest.mark.parametrize("cls,channels", [(ConvUsedTwice, 1), (SharedConv, 2)])
def test_a_conv_with_other_uses_or_calls_keeps_its_batchnorm(cls, channels):
    model, x = built(cls, channels)
    fast = fast_of(model, x)
    assert batchnorms_run(fast) == batchnorms_run(model)
    assert_same_logits(model, fast, x)


@pytest.mark.parametrize("cls,channels", [(MaskedByConv, 1), (ViewAfterConv, 2)])
def test_a_rewrite_that_changes_or_breaks_the_logits_falls_back_to_the_model(cls, channels):
    model, x = built(cls, channels)
    assert fast_of(model, x) is model
    assert pgd(model, x, torch.zeros(4, dtype=torch.long), eps=0.1, alpha=0.05, steps=2).shape == x.shape


def test_models_with_hooks_in_training_mode_or_wrapped_are_run_as_they_are():
    model = randomise_batchnorms(models.build("resnet18", in_channels=3, num_classes=10, width=2, input_size=8), 0)
    x = torch.rand(2, 3, 8, 8)
    for wrapped in (nn.DataParallel(model), nn.Sequential(torch.compile(model))):
        assert fast_of(wrapped, x) is wrapped
    handle = model.layer1.register_forward_hook(lambda *args: None)
    assert fast_of(model, x) is model
    handle.remove()
    assert isinstance(fast_of(model, x), FastForward)
    model.train()
    assert fast_model(model, x) is model


def test_the_cache_does_not_keep_a_model_alive():
    model = randomise_batchnorms(models.build("resnet18", in_channels=3, num_classes=10, width=2, input_size=8), 0)
    fast_of(model, torch.rand(2, 3, 8, 8))
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


@settings(deadline=None, max_examples=examples(30))
@given(net_and_x=conv_bn_nets(), training=st.booleans())
def test_predict_runs_the_fast_forward_and_gives_the_models_predictions(net_and_x, training):
    """evaluation.predict (every accuracy, and through it the health gate and the curvature subspaces) reads the
    folded forward: its labels are the model's own argmax wherever the model's top two logits are further apart than
    float rounding, and the model comes back in the mode and with the gradient flags it had."""
    from advclaims.evaluation import predict

    model, x = net_and_x
    model.train(training)
    flags = [p.requires_grad for p in model.parameters()]
    labels = predict(model, x)
    assert model.training == training and [p.requires_grad for p in model.parameters()] == flags
    with torch.no_grad():
        logits = model.eval()(x)
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > LOGIT_RTOL * logits.abs().amax().clamp_min(1)
    assert torch.equal(labels[clear], logits.argmax(1)[clear])
    assert predict(model, x[:0]).shape == (0,)
