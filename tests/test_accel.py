"""The fast path's settings, and the check that bf16 attacks are as strong as fp32 ones."""

import warnings

import pytest
import torch

from advclaims import accel, data, models

from advclaims.checkpoints import training
from advclaims.attacks import pgd
from advclaims.evaluation import accuracy
from advclaims.plugin.options import pin_worker

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def test_auto_is_fp32_eager_on_cpu_and_bf16_compiled_on_cuda():
    cpu = accel.resolve("cpu")
    assert (cpu.precision, cpu.compile) == ("fp32", False)
    cuda = accel.resolve(torch.device("cuda"))
    assert (cuda.precision, cuda.compile) == ("bf16", True)
    assert accel.resolve("cpu", "bf16", False).precision == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        accel.resolve("cpu", "fp8")


def test_fp32_autocast_is_a_no_op_and_bf16_autocast_lowers_matmuls():
    a = torch.randn(8, 8)
    with accel.resolve("cpu", "fp32").autocast():
        assert (a @ a).dtype == torch.float32
    with accel.resolve("cpu", "bf16").autocast():
        assert (a @ a).dtype == torch.bfloat16


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    net = torch.nn.Linear(3, 2)

    def broken(model):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    wrapped = accel.fast_forward(net, accel.Accel(torch.device("cpu"), compile=True))
    x = torch.randn(4, 3)
    with pytest.warns(UserWarning, match="torch.compile failed.*no C\\+\\+ compiler"):
        assert torch.equal(wrapped(x), net(x))
    assert torch.equal(wrapped(x), net(x))  # no second warning: the failure is remembered


@pytest.mark.parametrize("worker, count, expected", [
    ("gw0", 4, "cuda:0"), ("gw5", 4, "cuda:1"), ("gw3", 8, "cuda:3"), (None, 4, "cuda"), ("gw2", 0, "cuda")])
def test_xdist_worker_n_is_pinned_to_gpu_n(monkeypatch, worker, count, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert str(pin_worker(torch.device("cuda"), worker)) == expected
    assert str(pin_worker(torch.device("cuda:2"), worker)) == "cuda:2"  # an explicit GPU stays
    assert str(pin_worker(torch.device("cpu"), worker)) == "cpu"


@pytest.fixture(scope="module")
def fmnist_lenet():
    """A LeNet trained for 5 epochs on 2,000 Fashion-MNIST images (seconds), and 500 test images."""
    root = data.default_root()
    try:
        train = data.load("fashion_mnist", "train", root=root).subset(2000, seed=0)
        test = data.load("fashion_mnist", "test", root=root).head(500)
    except data.DatasetMissing as err:
        pytest.skip(str(err))
    info = data.info("fashion_mnist")
    torch.manual_seed(0)
    net = models.build("lenet", in_channels=1, num_classes=10, width=8, mean=info.mean, std=info.std, input_size=28)
    training.train(net, train, training.Recipe("standard", epochs=5, lr=0.05, schedule="triangle"), seed=0,
                   progress=False)
    return net, test


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_pgd_is_as_strong_as_fp32_pgd(fmnist_lenet, device):
    """No gradient masking from low precision: PGD-20 under bf16 autocast leaves no more than one
    point more accuracy than fp32 PGD-20, at a radius where robust accuracy is far from 0 and 1."""
    net, test = fmnist_lenet
    net = net.to(device)
    x, y = test.images().to(device), test.y.to(device)
    eps = 0.05

    def robust(precision):
        g = torch.Generator().manual_seed(0)
        with accel.resolve(device, precision, False).autocast():
            x_adv = pgd(net, x, y, eps=eps, alpha=eps / 8, steps=20, generator=g)
        return accuracy(net, x_adv, y)

    clean, fp32, bf16 = accuracy(net, x, y), robust("fp32"), robust("bf16")
    assert clean > 0.6, f"the model did not train (clean accuracy {clean:.3f})"
    assert 0.1 < fp32 < clean - 0.1, f"eps {eps} gives no informative robust accuracy ({fp32:.3f} of {clean:.3f})"
    assert bf16 <= fp32 + 0.01, f"bf16 PGD is weaker: robust accuracy {bf16:.3f} vs fp32 {fp32:.3f}"
    assert abs(bf16 - fp32) <= 0.02


def test_compiled_training_runs_and_agrees_with_eager():
    """The torch.compile path (on by default on CUDA) really compiles here and trains the same model:
    a LeNet, one PGD-AT epoch on random images, eager vs compiled (~10 s of compilation)."""
    g = torch.Generator().manual_seed(1)
    split = data.Split("train", (torch.rand(256, 1, 28, 28, generator=g) * 255).to(torch.uint8),
                       torch.randint(0, 10, (256,), generator=g))
    recipe = training.Recipe("pgd", epochs=1, batch_size=64, lr=0.05, eps=0.1, alpha=0.05, attack_steps=1)
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        net = models.build("lenet", in_channels=1, num_classes=10, width=2, input_size=28, mean=(0.5,), std=(0.5,))
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a fallback to eager would warn: fail instead
            training.train(net, split, recipe, seed=0, progress=False,
                           accel=accel.Accel(torch.device("cpu"), compile=compiled))
        runs[compiled] = net.state_dict()
    for name, eager in runs[False].items():
        torch.testing.assert_close(runs[True][name], eager, rtol=1e-4, atol=1e-5, msg=name)
