"""Benchmarks against peers: one trained model and batch for all, ours and the peer timed interleaved.

Run: pytest benchmarks/ --benchmark-only --repro-threads 1   (the test extra: pip install -e ".[test]")
Options: --bench-width (ResNet-18 width, default 8), --bench-batch (attack batch, default 128).

Each comparison times ours with pytest-benchmark and runs the peer in the round's ``setup``, right
before ours, timed by the same clock: a machine that gets busier slows both alike. The ratio is
median(peer) / median(ours) over the measured rounds. At the end of the session a table prints every
ratio, both implementations' attack strength at the same budget, and PASS/FAIL against the
speedup targets (test_attack_speed.py); the tests assert the same targets, so a missed target fails its test.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from advclaims import accel as accel_mod
from advclaims import data, models, perf

N_CLASSES = 10
SIDE = 32


def pytest_addoption(parser):
    group = parser.getgroup("advclaims benchmarks")
    group.addoption("--bench-width", type=int, default=8, help="ResNet-18 width of the benchmark model (paper: 64)")
    group.addoption("--bench-batch", type=int, default=128, help="images per attack batch (default 128)")


# ---------------------------------------------------------------------------------------------
# data and model


def synthetic_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ten smooth colour templates (4x4 upsampled to 32x32) plus pixel noise: learnt in seconds, and
    a standard-trained net keeps part of its accuracy under small L-inf attacks, so robust accuracy
    means something."""
    templates = torch.rand(N_CLASSES, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    templates = 0.5 + 0.6 * (F.interpolate(templates, size=SIDE, mode="bilinear", align_corners=False) - 0.5)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return (templates[y] + 0.15 * torch.randn(n, 3, SIDE, SIDE, generator=g)).clamp(0, 1), y


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """--repro-device as the claims use it: auto is CUDA where there is one, else the CPU."""
    choice = request.config.getoption("--repro-device")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


@pytest.fixture(scope="session")
def accel(request, device) -> accel_mod.Accel:
    """The suite's fast path from --repro-precision and --repro-compile (auto: bf16 and compile on CUDA,
    fp32 eager on the CPU), as the claims' training uses it."""
    compile_choice = {"on": True, "off": False}.get(request.config.getoption("--repro-compile"), "auto")
    return accel_mod.resolve(device, request.config.getoption("--repro-precision"), compile_choice)


@pytest.fixture(scope="session")
def trained_model(request, device):
    """ResNet-18 (width --bench-width) trained for two epochs of 2,048 synthetic images, in eval mode."""
    x, y = (t.to(device) for t in synthetic_images(2048, seed=1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = models.build("resnet18", in_channels=3, num_classes=N_CLASSES,
                           width=request.config.getoption("--bench-width"), input_size=SIDE).to(device)
        order = torch.randperm(len(y))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(2):
        for batch in order.split(128):
            loss = F.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


@pytest.fixture(scope="session")
def test_images(device):
    """512 held-out synthetic images and labels: robust accuracies are measured on all of them."""
    return tuple(t.to(device) for t in synthetic_images(512, seed=2))


@pytest.fixture(scope="session")
def model_and_batch(request, trained_model, test_images):
    """The model and one timed batch (--bench-batch images of the test set, 128 by default)."""
    x, y = test_images
    n = request.config.getoption("--bench-batch")
    return trained_model, x[:n], y[:n]


@pytest.fixture(scope="session")
def synthetic_split(device):
    """synthetic_split(n) -> a training Split of n synthetic images (uint8 pixels, as datasets load)."""

    def make(n: int) -> data.Split:
        x, y = synthetic_images(n, seed=3)
        return data.Split("synthetic", (x * 255).round().to(torch.uint8).to(device), y.to(device))

    return make


@pytest.fixture
def fresh_model(trained_model):
    """A private copy for benchmarks that train (the shared model stays as it is)."""
    return copy.deepcopy(trained_model)


# ---------------------------------------------------------------------------------------------
# interleaved peer comparison and the closing table


RESULTS = pytest.StashKey[list]()


def pytest_configure(config):
    config.stash[RESULTS] = []


@pytest.fixture
def record(request):
    """Append a perf.Comparison or perf.Throughput to the closing table."""
    return request.config.stash[RESULTS].append


@pytest.fixture
def interleaved(benchmark, device):
    """interleaved(ours, peer, rounds, warmup) -> (ours seconds, peer seconds) per measured round.

    pytest-benchmark times ``ours``; the peer runs in each round's setup, just before it.
    With --benchmark-disable both run once.
    """

    def run(ours, peer, *, rounds: int, warmup: int = 1) -> tuple[list[float], list[float]]:
        ours_seconds, peer_seconds = [], []
        benchmark.pedantic(lambda: ours_seconds.append(perf.timed(ours, device)),
                           setup=lambda: peer_seconds.append(perf.timed(peer, device)),
                           rounds=rounds, warmup_rounds=warmup)
        return ours_seconds[-rounds:], peer_seconds[-rounds:]  # the warmup rounds come first

    return run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(RESULTS, [])
    comparisons = [r for r in results if isinstance(r, perf.Comparison)]
    throughputs = [r for r in results if isinstance(r, perf.Throughput)]
    if comparisons:
        terminalreporter.section("advclaims vs peers: median seconds per call over interleaved rounds")
        terminalreporter.write_line(f"{'attack':<9} {'peer':<13} {'batch':>5} {'ours s':>8} {'peer s':>8} "
                                    f"{'speedup':>8} {'target':>7} {'verdict':<11} {'FLOPs p/o':>9} "
                                    f"{'GFLOP/s o/p':>12}  strength at the same budget (ours / peer)")
        for c in comparisons:
            target = f">={c.target:g}x" if c.target else "-"
            work, rates = "-", "-"
            if c.flops is not None:
                work = f"{c.work_ratio:.2f}"
                rates = (f"{c.flops[0] / perf.median(c.ours_seconds) / 1e9:.1f}/"
                         f"{c.flops[1] / perf.median(c.peer_seconds) / 1e9:.1f}")
            terminalreporter.write_line(
                f"{c.name:<9} {c.peer:<13} {c.batch:>5} {perf.median(c.ours_seconds):>8.3f} "
                f"{perf.median(c.peer_seconds):>8.3f} {c.speedup:>7.2f}x {target:>7} {c.verdict:<11} {work:>9} "
                f"{rates:>12}  {c.strength}")
        terminalreporter.write_line("FLOPs p/o: the peer's FLOPs per call / ours; GFLOP/s o/p: FLOPs per median call "
                                    "time, ours / peer (torch.utils.flop_counter's formulas: convolutions and "
                                    "matmuls only)")
    if throughputs:
        terminalreporter.section("advclaims training throughput")
        for t in throughputs:
            terminalreporter.write_line(_throughput_line(t))


def _throughput_line(t: perf.Throughput) -> str:
    name, _ = perf.device_peak(t.device)
    utilisation = perf.mfu(t.flops_per_second, t.device)
    if utilisation is not None:
        mfu = f"MFU {utilisation:.1%} of the {name} bf16 dense peak"
    elif t.device.type == "cpu":
        mfu = "MFU is a CUDA figure (not reported on a CPU)"
    else:
        mfu = f"MFU not reported: no bf16 dense peak known for {name}"
    notes = "".join(f"; {key} {value}" for key, value in t.notes.items())
    return (f"{t.name}: {t.images_per_second:.1f} images/s, {perf.si(t.flops_per_image, 'FLOP')}/image, "
            f"{perf.si(t.flops_per_second, 'FLOP/s')} on {name}; {mfu}{notes}")
