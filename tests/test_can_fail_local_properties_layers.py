"""LP-8 .. LP-13 can fail: as tests/test_can_fail_local_properties.py does for LP-1 .. LP-7, each test runs the
analysis end to end on a constructed true case (asserted "reproduced") and a constructed false one
("contradicted"), through advclaims.plugin.evaluate against expected/. No training or store.

LP-8 .. LP-13, affine nets with ResNet-18's stage names (conv1 ~ identity, stem BN + ReLU, four checkerboard
3 x 3 convolutions, all scaled by a gain): per stage a checkerboard grows x 3, white noise about x 1, a
brightening shrinks / 3. The head reads Layer4's checkerboard ("checker" net) or its brightness
("brightness" net) against a threshold at a quantile of the planted attack's scores. The planted attack
mixes per image a share p ~ U(0, 1) of checkerboard pixels with brightening ones, sizes U(0.3, 0.9) eps, so
Conv1 and Layer0 do not depend on p. LP-8: ADV's gain half STD's (true) or twice (false). LP-9: on a checker
net the successful attacks are the checkerboard-rich ones (Layer4 Total ratio about 2.6, true); on a
brightness net the brightening ones (about 0.5, false). LP-10: STD checker and ADV brightness net, ADV's
FGSM 0.7 x its PGD (true); STD brightness and ADV checker, FGSM 1 / 0.7 x PGD (false). LP-11: transferred
white noise of eps / 2 (true) or a second draw of ADV's own attack (false). LP-12: a transferred smooth field
(true) or a second draw of STD's own attack (false). LP-13: five nets whose gains fall (true) or rise
(false) with weight decay.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advclaims import plugin
from advclaims.analysis.local_properties import layers as lp
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel

REPRODUCED, CONTRADICTED = "reproduced", "contradicted"
SIDE, EPS = 16, 0.1


def verdict(claim: str, measurement) -> str:
    return plugin.evaluate(claim, measurement, dataset="fashion_mnist", budget="smoke")["verdict"]


def assert_true_and_false(claim: str, true_case, false_case) -> None:
    """The constructed true case reproduces; the false one is contradicted."""
    true, false = verdict(claim, true_case), verdict(claim, false_case)
    assert true == REPRODUCED, f"{claim}: the constructed true case is {true}"
    assert false == CONTRADICTED, f"{claim}: the constructed false case is {false}, not contradicted"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(label: str, module: nn.Module) -> TrainedModel:
    return TrainedModel(label, module.eval(), {}, f"constructed-{label}", {}, False)


def planted(x, x_adv, y, source: str, attack: str = "pgd20") -> AdversarialSet:
    return AdversarialSet(attack, {"eps": EPS}, source, x, x_adv.clamp(0, 1), y)


def smooth_fields(n: int, seed: int, cells: int = 4) -> torch.Tensor:
    """(n, 1, SIDE, SIDE) fields in [-1, 1] varying over SIDE / cells-pixel blocks: low frequencies."""
    coarse = torch.rand(n, 1, cells, cells, generator=gen(seed)) * 2 - 1
    return nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)


def smooth_images(n: int, seed: int) -> torch.Tensor:
    return (0.5 + 0.3 * smooth_fields(n, seed)).clamp(0, 1)


N_STAGED = 200
CHECKER = ((torch.arange(SIDE).view(-1, 1) + torch.arange(SIDE).view(1, -1)) % 2 * -2 + 1).float()   # +-1
KERNEL = CHECKER[:3, :3] / 3          # passes a checkerboard x 3, a constant / 3, white noise about x 1


class Staged(nn.Module):
    """conv1 (about the identity), layer0 (BN + ReLU, in its linear range), layer1 .. layer4 (the checkerboard
    kernel), each scaled by ``gain``; the head says class 1 when its score of Layer4 (the checkerboard in it,
    or its mean brightness) passes ``tau``."""

    def __init__(self, gain: float, head: str, seed: int, tau: float = 0.0):
        super().__init__()
        g = gen(seed)
        self.conv1 = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        centre = torch.zeros(3, 3)
        centre[1, 1] = 1.0
        self.layer0 = nn.Sequential(nn.BatchNorm2d(1), nn.ReLU())
        self.layer1, self.layer2, self.layer3, self.layer4 = (nn.Conv2d(1, 1, 3, padding=1, bias=False)
                                                              for _ in range(4))
        with torch.no_grad():
            convs = (self.conv1, self.layer1, self.layer2, self.layer3, self.layer4)
            for conv, kernel in zip(convs, [centre] + [KERNEL] * 4):
                conv.weight.copy_(gain * (kernel + 0.03 * torch.randn(3, 3, generator=g)).view(1, 1, 3, 3))
            self.layer0[0].bias.fill_(1.0)
        self.head, self.tau = head, tau

    def score(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(self.conv1(x))))))
        return (out * CHECKER).mean((1, 2, 3)) if self.head == "checker" else out.mean((1, 2, 3))

    def forward(self, x):
        s = self.score(x) - self.tau
        return torch.stack([-s, s], 1)


def staged(label: str, gain: float, head: str, seed: int, calibrate: AdversarialSet | None = None,
           quantile: float = 0.5) -> TrainedModel:
    """A Staged net whose threshold is the ``quantile`` of its scores on ``calibrate``'s adversarial images."""
    net = Staged(gain, head, seed).eval()
    if calibrate is not None:
        with torch.no_grad():
            net.tau = float(torch.quantile(net.score(calibrate.x_adv), quantile))
    return model(label, net)


def staged_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth images of mean 0.5 carrying a faint checkerboard (0 .. 0.03: some near a checker head's
    threshold), all labelled class 0."""
    x = smooth_images(N_STAGED, 30)
    x = x - x.mean((1, 2, 3), keepdim=True) + 0.5
    faint = 0.03 * torch.rand(N_STAGED, 1, 1, 1, generator=gen(31)) * CHECKER
    return (x + faint).clamp(0, 1), torch.zeros(N_STAGED, dtype=torch.long)


def mixed(x, seed: int, scale: float = 1.0) -> torch.Tensor:
    """The planted attack: per image a share p ~ U(0, 1) of checkerboard pixels, the rest brightening, each of
    size U(0.3, 0.9) eps (times ``scale``)."""
    g = gen(seed)
    p = torch.rand(len(x), 1, 1, 1, generator=g)
    sign = torch.where(torch.rand(x.shape, generator=g) < p, CHECKER.expand_as(x), torch.ones_like(x))
    return x + scale * EPS * (0.3 + 0.6 * torch.rand(x.shape, generator=g)) * sign


def white(x, seed: int) -> torch.Tensor:
    """White noise of half eps, with a faint checkerboard of either sign (+-0.003): it moves a few images
    near the threshold, either way."""
    g = gen(seed)
    faint = 0.003 * (2 * torch.rand(len(x), 1, 1, 1, generator=g) - 1) * CHECKER
    return x + 0.5 * EPS * (2 * torch.rand(x.shape, generator=g) - 1) + faint


def smooth(x, seed: int) -> torch.Tensor:
    return x + 0.9 * EPS * smooth_fields(len(x), seed)


@pytest.fixture(scope="module")
def images():
    return staged_images()


def test_lp8_reproduces_when_the_robust_net_has_smaller_gains_and_is_contradicted_when_larger(images):
    x, y = images
    std = staged("STD", 1.0, "checker", 40)
    std_set, adv_set = planted(x, mixed(x, 41), y, "STD"), planted(x, mixed(x, 42), y, "ADV")
    measure = [lp.response_differences_std_vs_adv(std, staged("ADV", gain, "checker", 43), std_set=std_set,
                                                  adv_set=adv_set) for gain in (0.5, 2.0)]
    assert_true_and_false("LP-8", *measure)


def test_lp9_reproduces_when_layer4_decides_the_attack_and_is_contradicted_when_brightness_does(images):
    x, y = images
    s = planted(x, mixed(x, 50), y, "STD", "fgsm")
    assert_true_and_false("LP-9", lp.response_differences_by_outcome(staged("STD", 1.0, "checker", 51, s), s),
                          lp.response_differences_by_outcome(staged("STD", 1.0, "brightness", 51, s), s))


def test_lp10_reproduces_when_only_the_standard_nets_layer4_decides_and_is_contradicted_when_only_robust_ones(images):
    x, y = images
    std_fgsm, delta = planted(x, mixed(x, 60), y, "STD", "fgsm"), mixed(x, 61) - x
    jitter = 0.8 + 0.4 * torch.rand(x.shape, generator=gen(64))     # the weaker attack is not an exact rescaling
    small, full = planted(x, x + 0.7 * jitter * delta, y, "ADV", "fgsm"), planted(x, x + delta, y, "ADV")
    true = lp.outcome_ratios_std_vs_adv(
        staged("STD", 1.0, "checker", 62, std_fgsm), staged("ADV", 0.5, "brightness", 63, full),
        std_fgsm_set=std_fgsm, adv_pgd_set=full, adv_fgsm_set=small)
    small_pgd, full_fgsm = planted(x, x + 0.7 * jitter * delta, y, "ADV"), planted(x, x + delta, y, "ADV", "fgsm")
    false = lp.outcome_ratios_std_vs_adv(
        staged("STD", 1.0, "brightness", 62, std_fgsm), staged("ADV", 0.5, "checker", 63, full_fgsm),
        std_fgsm_set=std_fgsm, adv_pgd_set=small_pgd, adv_fgsm_set=full_fgsm)
    assert_true_and_false("LP-10", true, false)


def test_lp11_reproduces_on_transferred_white_noise_and_is_contradicted_on_a_transferred_checkerboard(images):
    x, y = images
    own = planted(x, mixed(x, 70), y, "ADV")
    adv = staged("ADV", 0.5, "checker", 71, own, quantile=0.3)
    assert_true_and_false(
        "LP-11", lp.transfer_response_differences(adv, own_set=own, transferred_set=planted(x, white(x, 72), y, "STD")),
        lp.transfer_response_differences(adv, own_set=own, transferred_set=planted(x, mixed(x, 73), y, "STD")))


def test_lp12_reproduces_on_a_transferred_smooth_field_and_is_contradicted_on_a_transferred_checkerboard(images):
    x, y = images
    own = planted(x, mixed(x, 80), y, "STD")
    std = staged("STD", 1.0, "checker", 81, own, quantile=0.2)
    assert_true_and_false(
        "LP-12",
        lp.transfer_response_differences(std, own_set=own, transferred_set=planted(x, smooth(x, 82), y, "ADV")),
        lp.transfer_response_differences(std, own_set=own, transferred_set=planted(x, mixed(x, 83), y, "ADV")))


WEIGHT_DECAYS = (1e-4, 5e-4, 1e-3, 2e-3, 5e-3)   # five: with four, p >= 1/24 can never contradict at 0.05 / 4


def test_lp13_reproduces_when_gains_fall_with_weight_decay_and_is_contradicted_when_they_rise(images):
    x, y = images
    sets = [planted(x, mixed(x, 90 + k), y, f"ADV wd {wd:g}") for k, wd in enumerate(WEIGHT_DECAYS)]
    tau = staged("ADV", 1.0, "checker", 95, sets[0]).module.tau        # one threshold for the whole sweep

    def sweep(gains):
        members = []
        for k, (wd, gain) in enumerate(zip(WEIGHT_DECAYS, gains)):
            net = staged(f"ADV wd {wd:g}", gain, "checker", 96)   # the same kernels, scaled
            net.module.tau = tau
            members.append((wd, net, sets[k]))
        return lp.weight_decay_sweep(members)

    gains = (1.0, 0.97, 0.94, 0.91, 0.88)
    assert_true_and_false("LP-13", sweep(gains), sweep(gains[::-1]))
