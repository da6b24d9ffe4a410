"""advclaims.perf: FLOP counts agree with torch's FlopCounterMode, peaks and MFU, peer comparisons."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from advclaims import perf
from advclaims.attacks import input_gradient, margin_loss


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


def test_flop_count_equals_flopcountermode_on_a_training_step():
    model, x = small_net(), torch.rand(6, 3, 8, 8)

    def step():
        model(x).sum().backward()

    with FlopCounterMode(display=False) as reference:
        step()
    assert perf.count_flops(step) == reference.get_total_flops() > 0


def test_flop_count_works_through_input_gradients_and_scales_with_the_batch():
    model = small_net()
    for p in model.parameters():
        p.requires_grad_(False)
    def gradient_of(n: int):
        return lambda: input_gradient(model, torch.rand(n, 3, 8, 8), torch.zeros(n, dtype=torch.long), margin_loss)

    one, two = perf.count_flops(gradient_of(1)), perf.count_flops(gradient_of(2))
    conv = 2 * 4 * 3 * 9 * 8 * 8  # multiply-adds of the conv's forward, counted as 2 FLOPs each
    linear = 2 * 256 * 5
    assert one == 2 * (conv + linear)  # forward, then the input gradient through both layers
    assert two == 2 * one


@pytest.mark.parametrize("name,key", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 SXM5 80GB", "H100 SXM"),
    ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA H100 NVL", None), ("NVIDIA GeForce RTX 4090", None),
])
def test_device_names_map_to_their_bf16_dense_peak_or_to_none(name, key):
    assert perf.peak_key(name) == key


def test_mfu_is_a_cuda_figure():
    assert perf.device_peak("cpu") == ("cpu", None)
    assert perf.mfu(1e12, "cpu") is None


def test_comparison_speedup_is_the_ratio_of_medians_and_the_verdict_follows_the_target():
    slow_peer = perf.Comparison("PGD", "peer", 8, ours_seconds=[1.0, 9.0, 2.0], peer_seconds=[3.0, 3.0, 100.0],
                                target=1.5)
    assert slow_peer.speedup == pytest.approx(1.5)
    assert slow_peer.verdict == "PASS"
    assert perf.Comparison("PGD", "peer", 8, [2.0], [2.0], target=1.5).verdict == "FAIL"
    assert perf.Comparison("FGSM", "peer", 8, [2.0], [2.0]).verdict == "(no target)"
    assert perf.Comparison("FGSM", "peer", 8, [2.0], [2.0], flops=(2, 3)).work_ratio == 1.5
    assert perf.Comparison("FGSM", "peer", 8, [2.0], [2.0]).work_ratio is None


def test_median_of_no_samples_says_to_run_a_round():
    with pytest.raises(ValueError, match="run at least one round"):
        perf.median([])


def test_si_prefixes():
    assert perf.si(52.8e6, "FLOP") == "52.8 MFLOP"
    assert perf.si(1.5e12, "FLOP/s") == "1.5 TFLOP/s"
    assert perf.si(12, "FLOP") == "12 FLOP"
