"""Every claim of the curvature paper can fail: each test feeds the claim's own analysis a case built so that the
claim holds and one built so that it is false, and shows with ``plugin.evaluate`` (the record the claim would get
at the smoke budget on Fashion-MNIST) that the verdict moves from reproduced to not reproduced.

The models are tiny and analytic (no training): a softplus / ReLU / linear MLP (CV-1); class scores with known
positively curved, negatively curved and flat directions (CV-2..CV-5); a net that sees only a few pixels, so
that its curved subspace and its attacks are known (CV-6..CV-8); a ball-shaped class (CV-9); a net that sees only
2x2 block means of smooth images, which down-sampling keeps (CV-10).
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advclaims.analysis.curvature import operator as cv
from advclaims.analysis.curvature.defence import downsampling_defence
from advclaims.analysis.curvature.directions import (additive_separability, class_departures, class_transitions,
                                                     flat_direction_effects, perturbation_range, score_curves)
from advclaims.analysis.curvature.subspaces import (FRACTION_DEFAULT, SvdBasis, accuracy_in_curvature_subspaces,
                                                    accuracy_in_svd_subspaces, confined_deepfool_norms, deepfool_svd,
                                                    few_dims, perturbation_fractions, random_subspace)
from advclaims.plugin import evaluate

REPRODUCED = "reproduced"


def verdicts(claim: str, measurement) -> tuple[str, dict[str, str]]:
    """The claim's verdict and each check's, as the smoke Fashion-MNIST instance would record them."""
    record = evaluate(claim, measurement)
    return record["verdict"], {c["statistic"]: c["verdict"] for c in record["checks"]}


def setup_of(net: nn.Module, x, y, svd_x, *, side: int, confined: int = 40, seed: int = 0) -> cv.Setup:
    model = SimpleNamespace(module=net.eval(), label="synthetic", spec={"arch": type(net).__name__}, key="synthetic")
    settings = cv.Settings(boundary_points=16, svd_images=len(svd_x), confined_images=confined, batch=512)
    return cv.Setup(model, x, y, svd_x, torch.full((1, side, side), 0.5), settings, eps=0.1, seed=seed)


# ---------------------------------------------------------------------------------------------
# CV-1: Algorithm 1 on MLPs over 4x4 images


class Centred(nn.Module):
    def forward(self, x):
        return 6 * (x.flatten(1) - 0.5)


def mlp(activation: nn.Module | None, hidden: int = 64) -> nn.Module:
    torch.manual_seed(0)
    layers = [Centred(), nn.Linear(16, hidden), *([activation] if activation else []), nn.Linear(hidden, 3)]
    net = nn.Sequential(*layers).double().eval()
    with torch.no_grad():  # no common mode: the three classes share the images
        net[-1].weight -= net[-1].weight.mean(1, keepdim=True)
        net[-1].bias.zero_()
    return net


def algorithm_1(net: nn.Module, h: float | None = None) -> cv.PrincipalCurvatures:
    candidates = torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = h or cv.central_difference_step(candidates)
    settings = cv.Settings(boundary_points=8, svd_images=1, confined_images=1, batch=512)
    classes = [cv.class_curvature(net, candidates, c, h=h, settings=settings) for c in range(3)]
    return cv.PrincipalCurvatures(classes, torch.full((1, 4, 4), 0.5), h)


def test_cv1_a_smooth_net_has_a_symmetric_operator_a_relu_net_an_asymmetric_one_and_a_linear_net_none():
    smooth = verdicts("CV-1", cv.principal_curvature_properties(algorithm_1(mlp(nn.Softplus()), h=1e-3)))
    relu = verdicts("CV-1", cv.principal_curvature_properties(algorithm_1(mlp(nn.ReLU(), hidden=256))))
    linear = verdicts("CV-1", cv.principal_curvature_properties(algorithm_1(mlp(None))))
    assert smooth[0] == REPRODUCED
    assert relu[0] == "contradicted" and relu[1]["relative_asymmetry"] == "contradicted"
    assert linear[0] == "contradicted" and linear[1]["hv_norm"] == "contradicted"    # the zero operator
    assert linear[1]["relative_asymmetry"] == "uninformative"                       # no symmetry to measure


# ---------------------------------------------------------------------------------------------
# CV-2..CV-5: class scores with known curved and flat directions, 4x4 images (16 pixels)

POS, NEG, CONTENT, GAIN, FLAT = (0, 1, 2), (3, 4, 5), [6, 7], 8, 9


class SharedDirections(nn.Module):
    """F_c = theta_c . z[6:8] + a g(z) (z_c^2 - z_{3+c}^2) with z = x - 0.5: along pixel c every image moves into
    class c, along pixel 3 + c out of it, pixels 9.. are ignored. g = exp(interaction * z_8): 1 (additively
    separable) or a per-image steepness (not separable)."""

    def __init__(self, a: float = 30.0, interaction: float = 0.0):
        super().__init__()
        angle = torch.arange(3) * 2 * torch.pi / 3
        self.theta = torch.stack([angle.cos(), angle.sin()], 1) * 2.0
        self.a, self.interaction = a, interaction

    def forward(self, x):
        z = x.flatten(1) - 0.5
        gain = torch.exp(self.interaction * z[:, GAIN])[:, None]
        return z[:, CONTENT] @ self.theta.T + self.a * gain * (z[:, list(POS)] ** 2 - z[:, list(NEG)] ** 2)


def shared_curvatures() -> cv.PrincipalCurvatures:
    """Algorithm 1's answer for SharedDirections, by hand: per class c, pixel c most positive, 3 + c most negative,
    pixel 9 the first of the flat (ignored) ones."""
    rest = [i for i in range(16) if i not in (*POS, *NEG, *CONTENT, GAIN, FLAT)]
    classes = []
    for c in range(3):
        order = ([POS[c]] + [POS[k] for k in range(3) if k != c] + CONTENT + [FLAT, GAIN] + rest
                 + [NEG[k] for k in range(3) if k != c] + [NEG[c]])
        k = torch.tensor([2.0, 0.5, 0.5, 0.1, 0.1] + [0.0] * 8 + [-0.5, -0.5, -2.0])
        eye = torch.eye(16)
        classes.append(cv.ClassCurvature(c, k, eye[:, order], eye, eye, eye, 2, 2, 0.0, "by hand"))
    return cv.PrincipalCurvatures(classes, torch.full((1, 4, 4), 0.5), 1.0, "shared directions")


@pytest.fixture(scope="module")
def shared_images():
    g = torch.Generator().manual_seed(0)
    z = torch.zeros(150, 16)
    z[:, CONTENT] = 0.15 * torch.randn(150, 2, generator=g)
    z[:, GAIN] = 0.15 * torch.randn(150, generator=g)
    return (0.5 + z).view(150, 1, 4, 4)


def curves_of(net: nn.Module, x: torch.Tensor, kinds=("positive", "negative", "flat")) -> dict:
    curv = shared_curvatures()
    y = net(x).argmax(1)
    unit = perturbation_range(x, curv.mean_image)
    return {k: score_curves(net, x, y, curv, k, unit=unit) for k in kinds}


@pytest.fixture(scope="module")
def shared_curves(shared_images):
    return curves_of(SharedDirections(), shared_images)


def test_cv2_images_move_into_a_class_along_its_most_curved_direction_not_along_its_flattest(shared_curves):
    assert verdicts("CV-2", class_transitions(shared_curves["positive"]))[0] == REPRODUCED
    flat = verdicts("CV-2", class_transitions(shared_curves["flat"]))
    assert flat[0] == "contradicted" and flat[1]["transition_at_max"] == "contradicted"


def test_cv3_images_leave_their_class_along_its_most_negatively_curved_direction_not_along_its_flattest(
        shared_curves):
    assert verdicts("CV-3", class_departures(shared_curves["negative"]))[0] == REPRODUCED
    flat = verdicts("CV-3", class_departures(shared_curves["flat"]))
    assert flat[0] == "contradicted" and flat[1]["departure_at_max"] == "contradicted"


def test_cv4_the_flattest_direction_leaves_predictions_alone_the_most_curved_one_does_not(shared_curves):
    assert verdicts("CV-4", flat_direction_effects(shared_curves["flat"], shared_curves["positive"]))[0] == REPRODUCED
    curved = verdicts("CV-4", flat_direction_effects(shared_curves["positive"], shared_curves["positive"]))
    assert curved[0] == "contradicted" and curved[1]["prediction_change_at_max"] == "contradicted"


def test_cv5_separable_scores_give_vertical_shifts_a_per_image_steepness_does_not(shared_curves, shared_images):
    separable = additive_separability(shared_curves["positive"], shared_curves["negative"])
    assert verdicts("CV-5", separable)[0] == REPRODUCED
    steep = curves_of(SharedDirections(interaction=8.0), shared_images, ("positive", "negative"))
    assert verdicts("CV-5", additive_separability(steep["positive"], steep["negative"]))[0] == "contradicted"


# ---------------------------------------------------------------------------------------------
# CV-6..CV-8: a net that sees only the first 4 of 64 pixels (8x8 images)

SIDE, SEEN, CLASSES = 8, 4, 3


class FewPixels(nn.Module):
    """A softplus MLP of the first SEEN pixels (minus 0.5): exactly flat along every other pixel."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn(SEEN, hidden, generator=g) * 3)
        w2 = torch.randn(hidden, CLASSES, generator=g)
        self.w2 = nn.Parameter(w2 - w2.mean(0, keepdim=True))

    def forward(self, x):
        return nn.functional.softplus((x.flatten(1)[:, :SEEN] - 0.5) @ self.w1) @ self.w2


def balanced(net: nn.Module, n: int, seed: int, images) -> tuple[torch.Tensor, torch.Tensor]:
    """n images, a third predicted as each class (so a constant prediction is at chance)."""
    x = images(20 * n, torch.Generator().manual_seed(seed))
    pred = net(x).argmax(1)
    idx = torch.cat([(pred == c).nonzero().squeeze(1)[:n // CLASSES] for c in range(CLASSES)])
    return x[idx], pred[idx]


def uniform_images(n, g):
    return torch.rand(n, 1, SIDE, SIDE, generator=g)


def with_label_noise(y: torch.Tensor, share: float = 0.1) -> torch.Tensor:
    """Labels that the net gets right 1 - share of the time (a clean accuracy below 100%, as for a trained net)."""
    flip = torch.rand(len(y), generator=torch.Generator().manual_seed(1)) < share
    return torch.where(flip, (y + 1) % CLASSES, y)


@pytest.fixture(scope="module")
def few_pixels():
    net = FewPixels().eval()
    x, y = balanced(net, 150, 0, uniform_images)
    svd_x, _ = balanced(net, 150, 2, uniform_images)
    setup = setup_of(net, x, with_label_noise(y), svd_x, side=SIDE)
    candidates = torch.rand(400, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    h = cv.central_difference_step(candidates)
    curv = cv.PrincipalCurvatures([cv.class_curvature(net, candidates, c, h=h, settings=setup.settings)
                                   for c in range(CLASSES)], setup.mean_image, h, "few pixels")
    return setup, curv


def curved_and_flat_swapped(curv: cv.PrincipalCurvatures) -> cv.PrincipalCurvatures:
    """The same directions with made-up curvatures that put the flattest at both ends (most positive and most
    negative) and the most curved in the middle (flattest)."""
    classes = []
    for cc in curv.classes:
        by_flatness = cc.abs_curvatures().argsort(stable=True)
        order = torch.cat([by_flatness[0::2], by_flatness[1::2].flip(0)])
        fake = torch.linspace(1, -1, len(order))
        classes.append(cv.ClassCurvature(cc.target, fake, cc.directions[:, order], cc.asym_gram, cc.sym_gram,
                                         cc.hv_gram, cc.points, cc.attacked, cc.seconds, "swapped"))
    return cv.PrincipalCurvatures(classes, curv.mean_image, curv.h, "curved and flat swapped")


def test_cv6_accuracy_lives_in_the_curved_subspace_and_not_once_curved_and_flat_are_swapped(few_pixels):
    setup, curv = few_pixels
    assert verdicts("CV-6", accuracy_in_curvature_subspaces(setup, curv))[0] == REPRODUCED
    swapped = verdicts("CV-6", accuracy_in_curvature_subspaces(setup, curved_and_flat_swapped(curv)))
    assert swapped[0] == "contradicted"
    assert swapped[1]["curved_accuracy_drop"] == "contradicted"
    assert swapped[1]["flat_accuracy_above_chance"] == "contradicted"


def test_cv7_attacks_live_in_the_curved_subspace_and_not_once_curved_and_flat_are_swapped(few_pixels):
    setup, curv = few_pixels
    deepfool = cv.deepfool_set(setup.net, setup.test_x)
    assert verdicts("CV-7", perturbation_fractions(setup, curv, deepfool))[0] == REPRODUCED
    swapped = verdicts("CV-7", perturbation_fractions(setup, curved_and_flat_swapped(curv), deepfool))
    assert swapped[0] == "contradicted"
    assert all(v == "contradicted" for name, v in swapped[1].items() if name.endswith("curved_minus_flat"))


def test_cv8_the_top_singular_vectors_carry_the_accuracy_and_the_bottom_ones_do_not(few_pixels):
    setup, _ = few_pixels
    own = cv.deepfool_set(setup.net, setup.svd_x)
    svd = deepfool_svd(own.perturbation[own.success])
    assert verdicts("CV-8", accuracy_in_svd_subspaces(setup, svd))[0] == REPRODUCED
    swapped = SvdBasis(svd.vectors.flip(1), svd.singular_values.flip(0), svd.images)     # S_hi <-> S_lo
    assert verdicts("CV-8", accuracy_in_svd_subspaces(setup, swapped))[0] == "contradicted"


# ---------------------------------------------------------------------------------------------
# CV-9: class 0 is a ball in the first 4 pixels; images inside it at random radii


class Ball(nn.Module):
    """Class 0 where ||z|| < radius for z the first SEEN pixels minus 0.5, class 1 outside: DeepFool moves radially,
    and an image with more of itself in the ball's subspace (a larger radius) is nearer the boundary."""

    radius = 0.4

    def forward(self, x):
        z = x.flatten(1)[:, :SEEN] - 0.5
        inside = self.radius ** 2 - (z ** 2).sum(1)
        return torch.stack([inside, torch.zeros_like(inside)], 1)


def ball_images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, SEEN, generator=g)
    x = torch.full((n, SIDE * SIDE), 0.5)
    x[:, :SEEN] += Ball.radius * (0.1 + 0.8 * torch.rand(n, 1, generator=g)) * d / d.norm(dim=1, keepdim=True)
    return x.view(n, 1, SIDE, SIDE)


def test_cv9_deepfool_needs_less_norm_in_its_svd_subspace_than_in_a_random_one_and_not_when_that_is_random():
    net = Ball().eval()
    setup = setup_of(net, ball_images(100, 0), torch.zeros(100, dtype=torch.long), ball_images(100, 1), side=SIDE)
    own = cv.deepfool_set(net, setup.svd_x)
    svd = deepfool_svd(own.perturbation[own.success])
    assert verdicts("CV-9", confined_deepfool_norms(setup, svd))[0] == REPRODUCED
    # S_hi replaced by the random subspace the analysis compares with (completed to a basis): no advantage left
    dims = SIDE * SIDE
    k = few_dims(dims, FRACTION_DEFAULT)
    completion = torch.randn(dims, dims - k, generator=torch.Generator().manual_seed(9))
    vectors = torch.linalg.qr(torch.cat([random_subspace(dims, k, seed=setup.seed), completion], 1).double())[0]
    random = verdicts("CV-9", confined_deepfool_norms(setup, SvdBasis(vectors.float(), torch.ones(dims), 0)))
    assert random[0] != REPRODUCED and random[1]["hi_over_random_norm"] == "inconclusive"


# ---------------------------------------------------------------------------------------------
# CV-10: a net of 2x2 block means, on smooth images


class BlockMeans(nn.Module):
    """A softplus MLP of the 2x2 block means of x - 0.5: low spatial frequencies only."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = nn.Parameter(torch.randn((SIDE // 2) ** 2, hidden, generator=g) * 3)
        w2 = torch.randn(hidden, CLASSES, generator=g)
        self.w2 = nn.Parameter(w2 - w2.mean(0, keepdim=True))

    def forward(self, x):
        return nn.functional.softplus(nn.functional.avg_pool2d(x - 0.5, 2).flatten(1) @ self.w1) @ self.w2


def smooth_images(n, g):
    coarse = torch.randn(n, 1, SIDE // 2, SIDE // 2, generator=g)
    up = nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    return (0.5 + 0.2 * up).clamp(0, 1)


def test_cv10_downsampling_defends_moderately_and_stays_attackable_and_without_downsampling_nothing_changes():
    net = BlockMeans().eval()
    x, y = balanced(net, 150, 0, smooth_images)
    svd_x, _ = balanced(net, 150, 2, smooth_images)
    setup = setup_of(net, x, with_label_noise(y), svd_x, side=SIDE)
    transferred = cv.deepfool_set(net, x)
    assert verdicts("CV-10", downsampling_defence(setup, transferred))[0] == REPRODUCED
    none = verdicts("CV-10", downsampling_defence(setup, transferred, d_low=SIDE))    # d_low = the input size
    assert none[0] == "contradicted"
    assert none[1]["fooling_drop_at_f1"] != REPRODUCED and none[1]["fooling_trend_with_f"] == "contradicted"
