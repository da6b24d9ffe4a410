"""Every local_properties claim can fail: each test runs the claim's analysis end to end on a model and data
constructed so that the claim holds (asserted "reproduced") and on one constructed so that it is false (reversed:
"contradicted"; merely absent: not "reproduced"), through advclaims.plugin.evaluate against expected/.

All hand-built, no training or store: 16 x 16 one-channel images, linear or affine nets whose frequency
response or stage gains are set by design, planted perturbations with per-image random sizes (so that every
statistic varies over images: a zero-width interval is uninformative). Role swaps were dropped: for ratios and
differences they are near-tautological.

- LP-1/2/3, linear frequency readers (class templates are plane waves). STD reads a class template at radius
  <= 2 and, more strongly, one per class in each band of radii 3 .. 10; its attack moves each image in one
  random high band. LP-1 true: low-passing removes the attack and keeps the class; false: the attack sits in
  the class's own band, which no radius removes (contradicted). LP-2 true: ADV reads mostly the low band and
  is attacked there (flat low-passed curve); false: ADV is a second high-band reader attacked like STD, whose
  curve falls as far (contradicted). LP-3 true: "nat low + adv high" regains accuracy band by band, "adv low +
  nat high" loses it; false: the attack is destructive at radius 2 and in band 10 and helps the true class in
  one band of 3 .. 6, so the swap curves rise, fall and rise again (Spearman about +-0.45, contradicted).
- LP-4, planted perturbations on smooth images. True: STD's is white sign noise, ADV's the sign of a smooth
  field. False: STD's is band-limited to radius 2 (log-amplitude added in the inner band only), ADV's white.
- LP-5, 4 classes: STD reads a texture at radius 5 .. 6, ADV a radius-1 pattern (both with a weak readout of
  a label-free code at radius 6 .. 7, balanced against the labels: all that is left to ADV once high-passed).
  True: STD's attack swaps the texture. False: STD reads the radius-1 pattern strongly and the texture
  weakly and is attacked through the pattern, so high-passed adversarial images keep their class.
- LP-6: true, ADV's perturbation is the sign of a smooth field (consistent, at eps), STD's white uniform noise;
  false, ADV's is the sign of a high-passed field (neighbours anti-correlated) with a third of its pixels at
  half size, STD's the smooth sign field.
- LP-7, the library's FGSM and PGD-20 on 2-class nets: true, the margin is quadratic along one pattern with
  natural images before its minimum, so FGSM's one full step overshoots where PGD's small steps stop inside;
  false, the margin is linear, where one signed step is the worst case: both fool the same images (not
  reproduced: the difference is 0 on every image).

LP-8 .. LP-13 (stage responses): tests/test_can_fail_local_properties_layers.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advclaims import plugin
from advclaims.analysis import frequency as F
from advclaims.analysis.local_properties import layers as lp
from advclaims.analysis.local_properties import spectra as lpf
from advclaims.analysis.local_properties.smoothness import perturbation_smoothness
from advclaims.attacks import fgsm, pgd
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel, attack_params

REPRODUCED, CONTRADICTED = "reproduced", "contradicted"
SIDE, EPS = 16, 0.1


def verdict(claim: str, measurement) -> str:
    return plugin.evaluate(claim, measurement, dataset="fashion_mnist", budget="smoke")["verdict"]


def assert_true_and_false(claim: str, true_case, false_case, *, false_verdict: str | None = CONTRADICTED) -> None:
    """The constructed true case reproduces; the false one gets ``false_verdict`` (None: anything but reproduced)."""
    true, false = verdict(claim, true_case), verdict(claim, false_case)
    assert true == REPRODUCED, f"{claim}: the constructed true case is {true}"
    if false_verdict is None:
        assert false != REPRODUCED, f"{claim}: the constructed false case is reproduced"
    else:
        assert false == false_verdict, f"{claim}: the constructed false case is {false}, not {false_verdict}"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model(label: str, module: nn.Module) -> TrainedModel:
    return TrainedModel(label, module.eval(), {}, f"constructed-{label}", {}, False)


def planted(x, x_adv, y, source: str, attack: str = "pgd20") -> AdversarialSet:
    return AdversarialSet(attack, {"eps": EPS}, source, x, x_adv.clamp(0, 1), y)


def wave(a: int, b: int, phase: float = 0.0) -> torch.Tensor:
    """Unit-norm (SIDE, SIDE) plane wave at frequency (a, b): distance hypot(a, b) from the spectrum's centre."""
    i = torch.arange(SIDE, dtype=torch.float32)
    t = torch.cos(2 * math.pi * (a * i.view(-1, 1) + b * i.view(1, -1)) / SIDE + phase)
    return t / t.norm()


def band(lo: float, hi: float, count: int) -> torch.Tensor:
    """(count, SIDE, SIDE) orthonormal waves (cos and sin of distinct frequencies) at distances in (lo, hi]."""
    freqs = sorted(((a, b) for a in range(0, 8) for b in range(-7, 8) if (a > 0 or b > 0)
                    and lo < math.hypot(a, b) <= hi), key=lambda f: (math.hypot(*f), f))
    waves = [wave(a, b, p) for a, b in freqs for p in (0.0, math.pi / 2)]
    assert len(waves) >= count, (lo, hi, len(waves))
    return torch.stack(waves[:count])


def smooth_fields(n: int, seed: int, cells: int = 4) -> torch.Tensor:
    """(n, 1, SIDE, SIDE) fields in [-1, 1] varying over SIDE / cells-pixel blocks: low frequencies."""
    coarse = torch.rand(n, 1, cells, cells, generator=gen(seed)) * 2 - 1
    return nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)


class Reader(nn.Module):
    """A linear classifier: logits_k = <templates_k, x>."""

    def __init__(self, templates: torch.Tensor):
        super().__init__()
        self.register_buffer("templates", templates.reshape(len(templates), 1, SIDE, SIDE))

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.templates)


# ---------------------------------------------------------------------------------------------
# LP-1, LP-2, LP-3: frequency readers

K, N_CURVE = 8, 200
LOW = band(1.0, 2.0, K)                                        # the class templates: radius 1.4 .. 2
HIGH = torch.stack([band(j - 1.0, float(j), K) for j in range(3, 11)])  # (bands 3 .. 10, K, SIDE, SIDE)
RADIUS1 = band(0.0, 1.0, 4)                                     # what a radius-1 low-pass keeps (besides DC)
ALPHA, BETA, CONTENT, WHITE, START_LOW, START_CORNER = 3.0, 4.0, 0.8, 2.0, 0.1, 0.2


def reader(high: float, seed: int) -> Reader:
    """LOW with weight ALPHA, every HIGH band with ``high``, a weak radius-1 readout that alone decides once a
    low-pass of radius 1 has removed the rest (label-free: about chance there), and a weak readout of white
    noise (images near the boundary then move a little with every radius, as a trained net's do)."""
    g = gen(seed)
    r1 = torch.einsum("kj,jhw->khw", torch.randn(K, 4, generator=g), RADIUS1)
    white = torch.randn(K, SIDE, SIDE, generator=g) / SIDE
    return Reader(ALPHA * LOW + high * HIGH.sum(0) + 0.1 * r1 + WHITE * white)


def curve_images(seed: int = 0):
    y = torch.arange(N_CURVE) % K
    g = gen(seed)
    r1 = torch.einsum("nj,jhw->nhw", 0.5 * torch.randn(N_CURVE, 4, generator=g), RADIUS1)
    content = CONTENT * (0.5 + torch.rand(N_CURVE, 1, 1, generator=g))     # some natural images near the boundary
    x = 0.5 + content * LOW[y] + r1 + 0.05 * torch.randn(N_CURVE, SIDE, SIDE, generator=g)
    return x.unsqueeze(1).clamp(0, 1), y


def band_attack(x, y, templates: torch.Tensor, seed: int, *, high_share: float = 0.0,
                size: tuple[float, float] = (0.25, 0.5)) -> torch.Tensor:
    """Per image, move its class's weight in ``templates`` (bands, K, SIDE, SIDE) to the next class's, in one
    random band, by a random amount in ``size`` (and by ``high_share`` of it in a random HIGH band); plus a
    random start (white; at radius 1, where it moves the radius-1 readout; in LOW and beyond radius 10, where
    it moves images near the boundary, so that adjacent radii's accuracies are not in the same order on every
    resample)."""
    g = gen(seed)
    n = len(y)
    j, h = torch.randint(len(templates), (n,), generator=g), torch.randint(len(HIGH), (n,), generator=g)
    a = size[0] + (size[1] - size[0]) * torch.rand(n, 1, 1, generator=g)
    move = templates[j, (y + 1) % K] - templates[j, y] + high_share * (HIGH[h, (y + 1) % K] - HIGH[h, y])
    start = (0.02 * (2 * torch.rand(n, SIDE, SIDE, generator=g) - 1)
             + torch.einsum("nj,jhw->nhw", 0.15 * torch.randn(n, 4, generator=g), RADIUS1)
             + torch.einsum("nj,jhw->nhw", START_LOW * torch.randn(n, K, generator=g), LOW)
             + START_CORNER * F.high_pass(torch.randn(n, SIDE, SIDE, generator=g), 10.0))
    return x + (a * move + start).clamp(-EPS, EPS).unsqueeze(1)


def two_ends_attack(x, y, seed: int) -> torch.Tensor:
    """Destructive at both ends of the spectrum (radius 2 and band 10, towards the next class) and helpful in
    between (one random band of 3 .. 6, towards the true class), within +-2 eps."""
    g = gen(seed)
    n, nxt = len(y), (y + 1) % K
    j = torch.randint(0, 4, (n,), generator=g)
    a = (0.33 + 0.07 * torch.rand(n, 1, 1, generator=g))
    b = (0.2 + 0.1 * torch.rand(n, 1, 1, generator=g))
    delta = (a * (LOW[nxt] - LOW[y] + HIGH[-1, nxt] - HIGH[-1, y]) + b * (HIGH[j, y] - HIGH[j, nxt])
             + 0.02 * (2 * torch.rand(n, SIDE, SIDE, generator=g) - 1))
    return x + delta.clamp(-2 * EPS, 2 * EPS).unsqueeze(1)


@pytest.fixture(scope="module")
def curves() -> dict:
    return curve_cases()


def curve_cases() -> dict:
    x, y = curve_images()
    std, low_only = model("STD", reader(BETA, 1)), model("ADV", reader(1.0, 2))
    return {"x": x, "y": y, "std": std, "low_only": low_only, "fragile_adv": model("ADV", reader(BETA, 3)),
            "high_attack": planted(x, band_attack(x, y, HIGH, 4), y, "STD"),
            "low_attack": planted(x, band_attack(x, y, LOW.unsqueeze(0), 5, size=(0.42, 0.56)), y, "STD"),
            "two_ends_attack": planted(x, two_ends_attack(x, y, 8), y, "STD"),
            "adv_low_attack": planted(x, band_attack(x, y, LOW.unsqueeze(0), 6, high_share=0.1), y, "ADV"),
            "adv_high_attack": planted(x, band_attack(x, y, HIGH, 7), y, "ADV")}


def test_lp1_reproduces_on_a_high_frequency_attack_and_is_contradicted_on_a_low_frequency_one(curves):
    assert_true_and_false("LP-1", lpf.low_pass_accuracy(curves["std"], curves["high_attack"]),
                          lpf.low_pass_accuracy(curves["std"], curves["low_attack"]))


def test_lp2_reproduces_on_a_low_frequency_robust_model_and_is_contradicted_on_a_fragile_one(curves):
    c = curves
    assert_true_and_false(
        "LP-2", lpf.low_pass_accuracy_std_vs_adv(c["std"], c["low_only"], std_set=c["high_attack"],
                                                 adv_set=c["adv_low_attack"]),
        lpf.low_pass_accuracy_std_vs_adv(c["std"], c["fragile_adv"], std_set=c["high_attack"],
                                         adv_set=c["adv_high_attack"]))


def test_lp3_reproduces_on_a_high_frequency_attack_and_is_contradicted_on_one_that_helps_in_mid_band(curves):
    assert_true_and_false("LP-3", lpf.frequency_swap(curves["std"], curves["high_attack"]),
                          lpf.frequency_swap(curves["std"], curves["two_ends_attack"]))


# ---------------------------------------------------------------------------------------------
# LP-4, LP-6: planted perturbations on smooth images

N_PLANTED = 160


def smooth_images(n: int = N_PLANTED, seed: int = 0) -> torch.Tensor:
    return (0.5 + 0.3 * smooth_fields(n, seed)).clamp(0, 1)


def white_sign(n: int, seed: int) -> torch.Tensor:
    return EPS * torch.sign(torch.randn(n, 1, SIDE, SIDE, generator=gen(seed)))


def band_limited(n: int, seed: int, radius: float = 2.0) -> torch.Tensor:
    """Random fields with no frequency beyond ``radius``, scaled to reach +-EPS."""
    field = F.low_pass(torch.randn(n, 1, SIDE, SIDE, generator=gen(seed)), radius)
    return EPS * field / field.abs().amax((1, 2, 3), keepdim=True)


def test_lp4_reproduces_on_white_standard_perturbations_and_is_contradicted_on_band_limited_ones():
    x = smooth_images()
    y = torch.zeros(N_PLANTED, dtype=torch.long)
    smooth_sign = EPS * torch.sign(smooth_fields(N_PLANTED, 2))
    true = lpf.spectrum_differences(planted(x, x + white_sign(N_PLANTED, 1), y, "STD"),
                                    planted(x, x + smooth_sign, y, "ADV"))
    false = lpf.spectrum_differences(planted(x, x + band_limited(N_PLANTED, 3), y, "STD"),
                                     planted(x, x + white_sign(N_PLANTED, 4), y, "ADV"))
    assert_true_and_false("LP-4", true, false)


def test_lp6_reproduces_on_a_consistent_robust_perturbation_and_is_contradicted_on_an_anti_correlated_one():
    x = smooth_images()
    y = torch.arange(N_PLANTED) % 4
    consistent = EPS * torch.sign(smooth_fields(N_PLANTED, 5))
    disordered = EPS * (2 * torch.rand(x.shape, generator=gen(6)) - 1)
    rough = F.high_pass(torch.randn(x.shape, generator=gen(7)), SIDE / 2)   # past half Nyquist: neighbours flip sign
    inside = torch.where(torch.rand(x.shape, generator=gen(8)) < 1 / 3, 0.5, 1.0)
    anti = EPS * torch.sign(rough) * inside
    std, adv = model("STD", Reader(torch.randn(4, SIDE, SIDE, generator=gen(9)))), model("ADV", Reader(LOW[:4]))
    true = perturbation_smoothness(std, adv, std_set=planted(x, x + disordered, y, "STD"),
                                   adv_set=planted(x, x + consistent, y, "ADV"))
    false = perturbation_smoothness(std, adv, std_set=planted(x, x + consistent, y, "STD"),
                                    adv_set=planted(x, x + anti, y, "ADV"))
    assert_true_and_false("LP-6", true, false)


# ---------------------------------------------------------------------------------------------
# LP-5: high-passed images, 4 classes

C5, N5 = 4, 400
TEXTURE = band(5.0, 6.0, C5)          # STD's cue: survives every high-pass radius of LP-5's range (1 .. 4)
PATTERN = band(0.0, 1.0, C5)          # ADV's cue: gone after any high-pass


NUISANCE = band(6.0, 7.0, C5)         # a label-free code every image carries, balanced against the labels


def lp5_images():
    """Labels y = i mod 4 carry TEXTURE and PATTERN; the nuisance code (i // 4) mod 4 is independent of y (every
    pair equally often), so that a model reading only it on high-passed images is exactly at chance."""
    i = torch.arange(N5)
    y, z = i % C5, (i // C5) % C5
    g = gen(10)
    x = (0.5 + 0.5 * TEXTURE[y] + 0.5 * PATTERN[y] + 0.3 * NUISANCE[z]
         + 0.03 * torch.randn(N5, SIDE, SIDE, generator=g))
    return x.unsqueeze(1).clamp(0, 1), y


def swap_cue(x, y, cue: torch.Tensor, seed: int) -> torch.Tensor:
    """Move a random share (0.15 .. 0.6) of the class's ``cue`` (0.5 in the image) to the next class's: the
    attack, clipped to eps; below 0.25 it fails."""
    amount = 0.15 + 0.45 * torch.rand(len(y), 1, 1, generator=gen(seed))
    delta = amount * (cue[(y + 1) % C5] - cue[y])
    return x + delta.clamp(-EPS, EPS).unsqueeze(1)


def test_lp5_reproduces_on_a_texture_attack_and_is_contradicted_on_a_low_frequency_one():
    x, y = lp5_images()
    texture_reader = model("STD", Reader(TEXTURE + 0.05 * NUISANCE))
    two_cue = model("STD", Reader(0.2 * TEXTURE + PATTERN + 0.05 * NUISANCE))
    adv = model("ADV", Reader(PATTERN + 0.05 * NUISANCE))
    adv_set = planted(x, swap_cue(x, y, PATTERN, 14), y, "ADV")
    true = lpf.high_pass_accuracy(texture_reader, adv, std_set=planted(x, swap_cue(x, y, TEXTURE, 15), y, "STD"),
                                  adv_set=adv_set)
    false = lpf.high_pass_accuracy(two_cue, adv, std_set=planted(x, swap_cue(x, y, PATTERN, 16), y, "STD"),
                                   adv_set=adv_set)
    assert_true_and_false("LP-5", true, false)


# ---------------------------------------------------------------------------------------------
# LP-7: the library's FGSM and PGD-20 on 2-class nets whose margin is quadratic or linear along one pattern

N7 = 200
PATTERN7 = torch.sign(torch.randn(SIDE, SIDE, generator=gen(20)))  # s(x) = mean(PATTERN7 * x): an eps step moves it eps
TARGET7 = 0.1                                    # s at the margin's minimum (quadratic) or at its zero (linear)


class AlongPattern(nn.Module):
    """Two classes, margin (class 0 over 1) a function of s(x): b (s - TARGET7)^2 - h, or TARGET7 - s."""

    def __init__(self, quadratic: bool):
        super().__init__()
        self.quadratic = quadratic
        self.register_buffer("pattern", PATTERN7.view(1, 1, SIDE, SIDE))

    def forward(self, x):
        s = (x * self.pattern).mean((1, 2, 3))
        margin = 100 * ((s - TARGET7) ** 2 - (0.4 * EPS) ** 2) / EPS if self.quadratic else (TARGET7 - s) / EPS
        return torch.stack([margin, -margin], 1)


def lp7_case(quadratic: bool, seed: int = 21) -> tuple[TrainedModel, AdversarialSet, AdversarialSet]:
    """Natural images with s = TARGET7 - rho eps, rho ~ U(0.45, 0.75) (quadratic: correct, since rho > 0.4;
    FGSM lands at TARGET7 + (1 - rho) eps, wrong only where rho > 0.6) or U(0.5, 1.5) (linear: every attack
    that can reach s = TARGET7, rho < 1, fools it). Both attacks with the suite's evaluation parameters."""
    g = gen(seed)
    base = smooth_images(N7, seed)
    rho = 0.45 + 0.3 * torch.rand(N7, generator=g) if quadratic else 0.5 + torch.rand(N7, generator=g)
    shift = TARGET7 - rho * EPS - (base * PATTERN7).mean((1, 2, 3))
    x = (base + shift.view(-1, 1, 1, 1) * PATTERN7).clamp(0, 1)
    y = torch.zeros(N7, dtype=torch.long)
    net = model("ADV", AlongPattern(quadratic))
    f = fgsm(net.module, x, y, **attack_params("fgsm", EPS))
    p = pgd(net.module, x, y, **attack_params("pgd20", EPS), generator=gen(seed + 1))
    return net, planted(x, f, y, "ADV", "fgsm"), planted(x, p, y, "ADV")


def test_lp7_reproduces_where_fgsm_overshoots_and_not_on_a_linear_margin():
    (qnet, qf, qp), (lnet, lf, lpgd) = lp7_case(True), lp7_case(False)
    assert_true_and_false("LP-7", lp.fgsm_versus_pgd(qnet, fgsm_set=qf, pgd_set=qp),
                          lp.fgsm_versus_pgd(lnet, fgsm_set=lf, pgd_set=lpgd), false_verdict=None)
