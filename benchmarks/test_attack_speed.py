"""Attack throughput, ours against torchattacks on the same trained model, batch and budget.

Run: pytest benchmarks/ --benchmark-only --repro-threads 1

Every test times both attacks interleaved (see conftest.py), counts both calls' FLOPs (equal work
means a speedup is efficiency, not a weaker attack), checks that both are equally strong at the
budget, and asserts the suite's speedup targets (PGD >= 1.5x, DeepFool >= 20x; on a CPU DeepFool xfails between its
2.5x floor and 20x, see below).
PGD's budget is 4/255 (step 1/255): on the benchmark model, robust accuracy then sits near 80%
rather than near 0, where any two attacks agree.
"""

import pytest
import torch

from advclaims import perf
from advclaims.attacks import cw_l2, deepfool, fgsm, pgd
from advclaims.perf import Comparison

torchattacks = pytest.importorskip("torchattacks")

EPS, ALPHA, STEPS = 4 / 255, 1 / 255, 20
SEED = 1234
ACCURACY_POINT = 0.01  # a speedup counts only at equal robust accuracy (±1 point)
DEEPFOOL_IMAGES = 32  # torchattacks' DeepFool builds each image's Jacobian alone: seconds per image batch
DEEPFOOL_STEPS, OVERSHOOT = 50, 0.02
CW_C, CW_KAPPA, CW_STEPS, CW_LR = 1.0, 0.0, 20, 0.01


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def l2(x_adv, x) -> torch.Tensor:
    return (x_adv - x).flatten(1).norm(dim=1)


def flops(ours, peer) -> tuple[int, int]:
    return perf.count_flops(ours), perf.count_flops(peer)


def same_start(seed: int):
    """A generator for ours; torch's global RNG, seeded alike, for torchattacks: the same uniform noise
    on the CPU, so the two PGDs differ only in float rounding."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def test_pgd20_against_torchattacks(interleaved, record, model_and_batch, test_images):
    net, x, y = model_and_batch
    peer = torchattacks.PGD(net, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    run_ours, run_peer = lambda: pgd(net, x, y, eps=EPS, alpha=ALPHA, steps=STEPS), lambda: peer(x, y)
    ours_s, peer_s = interleaved(run_ours, run_peer, rounds=5)
    x_all, y_all = test_images
    with torch.random.fork_rng(devices=[]):
        ours_acc = accuracy(net, pgd(net, x_all, y_all, eps=EPS, alpha=ALPHA, steps=STEPS,
                                     generator=same_start(SEED)), y_all)
        same_start(SEED)
        peer_acc = accuracy(net, peer(x_all, y_all), y_all)
    result = Comparison("PGD-20", "torchattacks", len(y), ours_s, peer_s, target=1.5, flops=flops(run_ours, run_peer),
                        strength=f"robust acc ({len(y_all)} images) {ours_acc:.2%} / {peer_acc:.2%}")
    record(result)
    assert accuracy(net, x_all, y_all) - peer_acc > 0.05, "the budget should bite, or equal accuracy proves little"
    assert abs(ours_acc - peer_acc) <= ACCURACY_POINT, result.strength
    assert result.speedup >= result.target, f"PGD-20 {result.speedup:.2f}x torchattacks, target {result.target}x"


def test_fgsm_against_torchattacks(interleaved, record, model_and_batch, test_images):
    net, x, y = model_and_batch
    peer = torchattacks.FGSM(net, eps=EPS)
    run_ours, run_peer = lambda: fgsm(net, x, y, eps=EPS), lambda: peer(x, y)
    ours_s, peer_s = interleaved(run_ours, run_peer, rounds=7)
    x_all, y_all = test_images
    ours_acc = accuracy(net, fgsm(net, x_all, y_all, eps=EPS), y_all)
    peer_acc = accuracy(net, peer(x_all, y_all), y_all)
    result = Comparison("FGSM", "torchattacks", len(y), ours_s, peer_s, flops=flops(run_ours, run_peer),
                        strength=f"robust acc ({len(y_all)} images) {ours_acc:.2%} / {peer_acc:.2%}")
    record(result)
    assert abs(ours_acc - peer_acc) <= ACCURACY_POINT, result.strength


CPU_DEEPFOOL_FLOOR = 2.5  # measured 3.93x on 2 CPU cores (docs/performance.md); the ceiling there is ~5.2x


def test_deepfool_against_torchattacks(interleaved, record, model_and_batch):
    net, x, y = model_and_batch
    x, y = x[:DEEPFOOL_IMAGES], y[:DEEPFOOL_IMAGES]
    peer = torchattacks.DeepFool(net, steps=DEEPFOOL_STEPS, overshoot=OVERSHOOT)
    run_ours = lambda: deepfool(net, x, y=y, max_iter=DEEPFOOL_STEPS, overshoot=OVERSHOOT)  # noqa: E731
    run_peer = lambda: peer(x, y)  # noqa: E731
    ours_s, peer_s = interleaved(run_ours, run_peer, rounds=3)
    ours, theirs = run_ours(), run_peer()
    ours_success, peer_success = float(ours.success.float().mean()), 1 - accuracy(net, theirs, y)
    ours_norm, peer_norm = float(l2(ours.x_adv, x).median()), float(l2(theirs, x).median())
    result = Comparison("DeepFool", "torchattacks", len(y), ours_s, peer_s, target=20.0,
                        flops=flops(run_ours, run_peer),
                        strength=f"success {ours_success:.0%} / {peer_success:.0%}, "
                                 f"median L2 {ours_norm:.3f} / {peer_norm:.3f}")
    record(result)
    assert ours_success >= peer_success - 1 / len(y), result.strength
    assert abs(ours_norm - peer_norm) <= 0.05 * peer_norm, result.strength
    if result.speedup < result.target and x.device.type == "cpu":
        # A known finding, not a pass (docs/performance.md): on a CPU both DeepFools are FLOP-bound, so
        # batching can win at most (best rate / per-image rate) x (FLOP ratio), about 5x here. What
        # must still hold on a CPU is that the batched attack keeps most of that advantage.
        assert result.speedup >= CPU_DEEPFOOL_FLOOR, (f"DeepFool {result.speedup:.2f}x torchattacks on the CPU, "
                                                      f"below even the CPU floor {CPU_DEEPFOOL_FLOOR}x")
        pytest.xfail(f"DeepFool {result.speedup:.2f}x torchattacks: the {result.target:g}x target is not reachable "
                     f"on a CPU, where both are FLOP-bound (ceiling about 5x); it is a GPU target")
    assert result.speedup >= result.target, (f"DeepFool {result.speedup:.2f}x torchattacks, target {result.target}x "
                                             f"(peer/our FLOPs {result.work_ratio:.2f})")


def test_cw_l2_against_torchattacks(interleaved, record, model_and_batch):
    net, x, y = model_and_batch
    peer = torchattacks.CW(net, c=CW_C, kappa=CW_KAPPA, steps=CW_STEPS, lr=CW_LR)
    run_ours = lambda: cw_l2(net, x, y, c=CW_C, kappa=CW_KAPPA, steps=CW_STEPS, lr=CW_LR)  # noqa: E731
    run_peer = lambda: peer(x, y)  # noqa: E731
    ours_s, peer_s = interleaved(run_ours, run_peer, rounds=3)
    ours, theirs = run_ours(), run_peer()
    ours_success, peer_success = 1 - accuracy(net, ours, y), 1 - accuracy(net, theirs, y)
    result = Comparison("CW-L2", "torchattacks", len(y), ours_s, peer_s, flops=flops(run_ours, run_peer),
                        strength=f"success {ours_success:.0%} / {peer_success:.0%}, median L2 "
                                 f"{float(l2(ours, x).median()):.3f} / {float(l2(theirs, x).median()):.3f}")
    record(result)
    assert ours_success >= peer_success - ACCURACY_POINT, result.strength
