"""Every local_properties claim can fail: fed a case where the claim is false, its analysis gets a verdict
other than the true case's, and not "reproduced" (advclaims.plugin.evaluate, against expected/).

Most claims run on the smoke STD and ADV ResNet-18s of the claims' first seed and their attacks, through the
same store keys (built once, whichever runs first); the curve claims (LP-1, LP-2, LP-3) on their first 100
test images, the response claims on their first 250 (LP-8, LP-11, LP-12) or all 500 (LP-9, LP-10: their
groups of failed attacks are small) and the sweep (LP-13) on its first 200, which keeps the file cheap. The false cases: STD and ADV swapped, natural and adversarial
images swapped, FGSM and PGD-20 swapped, the successful and failed groups exchanged, the model's own and the
transferred examples swapped, the weight decays reversed. LP-4, LP-5 and LP-6 are contradicted on those
models at smoke (expected/local_properties.toml), so they run on planted data on which each holds by design,
and then on the same data with the claim made false; LP-11 plants only its transferred examples.
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advclaims import models, plugin
from advclaims.analysis.local_properties import layers as lp
from advclaims.analysis.local_properties import spectra as lpf
from advclaims.analysis.responses import response_differences
from advclaims.analysis.local_properties.smoothness import perturbation_smoothness
from advclaims.data import DatasetMissing
from advclaims.models import RESNET_STAGES
from advclaims.pipeline import AdversarialSet, TrainedModel
from fixtures.local_properties import WEIGHT_DECAYS, sweep_pipeline

REPRODUCED = "reproduced"
CURVE_IMAGES = 100  # LP-1 .. LP-3 recompute a curve per radius: 100 images keep them to seconds
SWEEP_IMAGES = 200  # LP-13 computes every stage's responses of four models, twice
RESPONSE_IMAGES = 250  # LP-8, LP-11, LP-12: every stage's responses of two sets, twice


def verdict(claim: str, measurement) -> str:
    return plugin.evaluate(claim, measurement, dataset="fashion_mnist", budget="smoke")["verdict"]


def assert_fails(claim: str, true_case, false_case) -> None:
    """The false case's verdict differs from the true case's and is not "reproduced"."""
    true, false = verdict(claim, true_case), verdict(claim, false_case)
    assert false != REPRODUCED and false != true, f"{claim}: true case {true}, false case {false}"


def head(s: AdversarialSet, n: int) -> AdversarialSet:
    return replace(s, x=s.x[:n], x_adv=s.x_adv[:n], y=s.y[:n])


def natural_and_adversarial_swapped(s: AdversarialSet) -> AdversarialSet:
    return replace(s, x=s.x_adv, x_adv=s.x)


# ---------------------------------------------------------------------------------------------
# the smoke models of the claims' first seed


@pytest.fixture(scope="module")
def smoke(pipeline) -> SimpleNamespace:
    seed = pipeline.budget.seeds[0]
    try:
        std = pipeline.model("std", "fashion_mnist", label="STD", seed=seed)
        adv = pipeline.model("adv", "fashion_mnist", label="ADV", seed=seed)
    except DatasetMissing as err:
        pytest.skip(str(err))
    sets = {f"{role}_{attack}": pipeline.adversarial(model, attack, "fashion_mnist", seed=seed)
            for role, model in (("std", std), ("adv", adv)) for attack in ("pgd20", "fgsm")}
    return SimpleNamespace(std=std, adv=adv, **sets, **{f"{k}_head": head(s, RESPONSE_IMAGES) for k, s in sets.items()})


def test_lp1_fails_when_natural_and_adversarial_images_are_swapped(smoke):
    s = head(smoke.std_pgd20, CURVE_IMAGES)
    assert_fails("LP-1", lpf.low_pass_accuracy(smoke.std, s),
                 lpf.low_pass_accuracy(smoke.std, natural_and_adversarial_swapped(s)))


def test_lp2_fails_when_the_standard_and_robust_models_are_swapped(smoke):
    s, a = head(smoke.std_pgd20, CURVE_IMAGES), head(smoke.adv_pgd20, CURVE_IMAGES)
    assert_fails("LP-2", lpf.low_pass_accuracy_std_vs_adv(smoke.std, smoke.adv, std_set=s, adv_set=a),
                 lpf.low_pass_accuracy_std_vs_adv(smoke.adv, smoke.std, std_set=a, adv_set=s))


def test_lp3_fails_when_natural_and_adversarial_images_are_swapped(smoke):
    s = head(smoke.std_pgd20, CURVE_IMAGES)
    assert_fails("LP-3", lpf.frequency_swap(smoke.std, s),
                 lpf.frequency_swap(smoke.std, natural_and_adversarial_swapped(s)))


def test_lp7_fails_when_the_fgsm_and_pgd20_sets_are_swapped(smoke):
    assert_fails("LP-7", lp.fgsm_versus_pgd(smoke.adv, fgsm_set=smoke.adv_fgsm, pgd_set=smoke.adv_pgd20),
                 lp.fgsm_versus_pgd(smoke.adv, fgsm_set=smoke.adv_pgd20, pgd_set=smoke.adv_fgsm))


def test_lp8_fails_when_the_standard_and_robust_models_are_swapped(smoke):
    s, a = smoke.std_pgd20_head, smoke.adv_pgd20_head
    assert_fails("LP-8", lp.response_differences_std_vs_adv(smoke.std, smoke.adv, std_set=s, adv_set=a),
                 lp.response_differences_std_vs_adv(smoke.adv, smoke.std, std_set=a, adv_set=s))


def test_lp9_fails_when_the_successful_and_failed_groups_are_exchanged(smoke):
    s = smoke.std_fgsm
    success, failed = lp.outcome_groups(smoke.std, s)
    d = response_differences(smoke.std.module, s.x, s.x_adv, layers=RESNET_STAGES)
    bounds = lp.ceilings(smoke.std, s, RESNET_STAGES)
    assert_fails("LP-9", lp.outcome_comparison(d, success, failed, layers=RESNET_STAGES, bounds=bounds),
                 lp.outcome_comparison(d, failed, success, layers=RESNET_STAGES, bounds=bounds))


def test_lp10_fails_when_the_standard_and_robust_models_are_swapped(smoke):
    assert_fails("LP-10", lp.outcome_ratios_std_vs_adv(smoke.std, smoke.adv, std_fgsm_set=smoke.std_fgsm,
                                                       adv_pgd_set=smoke.adv_pgd20, adv_fgsm_set=smoke.adv_fgsm),
                 lp.outcome_ratios_std_vs_adv(smoke.adv, smoke.std, std_fgsm_set=smoke.adv_fgsm,
                                              adv_pgd_set=smoke.std_pgd20, adv_fgsm_set=smoke.std_fgsm))


def test_lp11_fails_when_the_robust_models_own_and_the_transferred_examples_are_swapped(smoke):
    """STD's examples make LP-11 not reproduce on the smoke ADV (expected/), so the transferred set is planted:
    ADV's own perturbations at a tenth of their size, on which every response difference shrinks and ADV's
    accuracy barely moves."""
    own = smoke.adv_pgd20_head
    weak = replace(own, source="STD", x_adv=own.x + 0.1 * (own.x_adv - own.x))
    assert_fails("LP-11", lp.transfer_response_differences(smoke.adv, own_set=own, transferred_set=weak),
                 lp.transfer_response_differences(smoke.adv, own_set=weak, transferred_set=own))


def test_lp12_fails_when_the_standard_models_own_and_the_transferred_examples_are_swapped(smoke):
    s, a = smoke.std_pgd20_head, smoke.adv_pgd20_head
    assert_fails("LP-12", lp.transfer_response_differences(smoke.std, own_set=s, transferred_set=a),
                 lp.transfer_response_differences(smoke.std, own_set=a, transferred_set=s))


def test_lp13_fails_when_the_weight_decays_are_reversed(pipeline, smoke):
    seed = pipeline.budget.seeds[0]
    sweep = sweep_pipeline(pipeline)
    members = []
    for wd in WEIGHT_DECAYS:  # the fixture's models and attacks: the same store keys
        model = sweep.model("adv", "fashion_mnist", weight_decay=wd, label=f"ADV wd {wd:g}", seed=seed)
        members.append((wd, model, head(sweep.adversarial(model, "pgd20", "fashion_mnist", seed=seed), SWEEP_IMAGES)))
    reversed_members = [(wd, m, s) for wd, (_, m, s) in zip(WEIGHT_DECAYS, reversed(members))]
    assert_fails("LP-13", lp.weight_decay_sweep(members), lp.weight_decay_sweep(reversed_members))


# ---------------------------------------------------------------------------------------------
# planted data: LP-4, LP-5 and LP-6 hold by design, then are made false

SIDE, EPS, CLASSES, N = 16, 0.1, 4, 160


def smooth_fields(n: int, seed: int) -> torch.Tensor:
    """(n, 1, SIDE, SIDE) fields in [-1, 1] that vary over 4-pixel blocks: low frequencies."""
    coarse = torch.rand(n, 1, SIDE // 4, SIDE // 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)


def natural_images(seed: int = 0) -> torch.Tensor:
    return (0.5 + 0.3 * smooth_fields(N, seed)).clamp(0, 1)


def labels() -> torch.Tensor:
    return torch.arange(N) % CLASSES


def planted_set(x: torch.Tensor, x_adv: torch.Tensor, source: str) -> AdversarialSet:
    return AdversarialSet("pgd20", {"eps": EPS}, source, x, x_adv, labels())


def tiny(label: str, seed: int) -> TrainedModel:
    torch.manual_seed(seed)
    net = models.build("resnet18", in_channels=1, num_classes=CLASSES, width=2, input_size=SIDE).eval()
    return TrainedModel(label, net, {}, f"tiny-{label}", {}, False)


def test_lp4_fails_when_the_disordered_perturbation_is_the_robust_models(tmp_path):
    """Planted: STD's perturbation is white sign noise (every frequency), ADV's the sign of a smooth field
    (mostly low frequencies); both at eps on smooth images, which carry little high-frequency amplitude."""
    x = natural_images()
    white = EPS * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    smooth = EPS * torch.sign(smooth_fields(N, 2))
    std_set, adv_set = planted_set(x, x + white, "STD"), planted_set(x, x + smooth, "ADV")
    assert_fails("LP-4", lpf.spectrum_differences(std_set, adv_set),
                 lpf.spectrum_differences(replace(adv_set, source="STD"), replace(std_set, source="ADV")))


def test_lp6_fails_when_the_locally_consistent_perturbation_is_the_standard_models():
    """Planted: ADV's perturbation is a smooth field at +-eps (locally consistent, at the bound), STD's white
    noise of uniform size (disordered, rarely at the bound); tiny models only pick Fig. 3's rows."""
    x = natural_images()
    consistent = EPS * torch.sign(smooth_fields(N, 3))
    disordered = EPS * (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(4)) - 1)
    std, adv = tiny("STD", 0), tiny("ADV", 1)
    std_set, adv_set = planted_set(x, x + disordered, "STD"), planted_set(x, x + consistent, "ADV")
    assert_fails("LP-6", perturbation_smoothness(std, adv, std_set=std_set, adv_set=adv_set),
                 perturbation_smoothness(std, adv, std_set=replace(adv_set, source="STD"),
                                         adv_set=replace(std_set, source="ADV")))


def textures() -> torch.Tensor:
    """(CLASSES, 1, SIDE, SIDE) orthogonal cosines at frequencies 5 to 7 from the centre: every high-pass
    radius of LP-5's default range (1 .. SIDE / 4) keeps them whole."""
    i = torch.arange(SIDE, dtype=torch.float32)
    freqs = [(5, 0), (0, 5), (4, 4), (5, 5)]
    return torch.stack([torch.cos(2 * math.pi * (a * i.view(-1, 1) + b * i.view(1, -1)) / SIDE)
                        for a, b in freqs]).unsqueeze(1)


class TextureReader(nn.Module):
    """A planted standard model: it reads the class from the high-frequency texture alone."""

    def __init__(self):
        super().__init__()
        self.register_buffer("templates", textures())

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.templates)


class BrightnessReader(nn.Module):
    """A planted robust model: it reads the class from the mean brightness alone, which every high-pass
    radius removes, so it predicts one class on every high-passed image (exactly chance agreement)."""

    def forward(self, x):
        centres = torch.linspace(0.3, 0.7, CLASSES, device=x.device)
        return -(x.mean((1, 2, 3)).view(-1, 1) - centres.view(1, -1)) ** 2


def test_lp5_fails_when_the_standard_and_robust_models_are_swapped():
    """Planted: natural images carry their class's texture; the attack on STD swaps it for the next class's
    texture (a change of 2 x 0.05 at most), the attack on ADV shifts the brightness. Swapping natural and
    adversarial images is no false case here: both sets must attack the same natural images."""
    t = textures()
    y = labels()
    x = (natural_images() * 0.8 + 0.1 + 0.05 * t[y]).clamp(0, 1)
    std_adv = (x - 0.05 * t[y] + 0.05 * t[(y + 1) % CLASSES]).clamp(0, 1)
    adv_adv = (x + EPS * torch.sign(smooth_fields(N, 5))).clamp(0, 1)
    std = TrainedModel("STD", TextureReader().eval(), {}, "texture", {}, False)
    adv = TrainedModel("ADV", BrightnessReader().eval(), {}, "brightness", {}, False)
    std_set, adv_set = planted_set(x, std_adv, "STD"), planted_set(x, adv_adv, "ADV")
    assert_fails("LP-5", lpf.high_pass_accuracy(std, adv, std_set=std_set, adv_set=adv_set),
                 lpf.high_pass_accuracy(adv, std, std_set=adv_set, adv_set=std_set))
