"""The curvature paper's library code: Algorithm 1's operator, subspaces, confined and targeted DeepFool."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advclaims import stats
from advclaims.verdict import expected
from advclaims.analysis.curvature import operator as cv
from advclaims.budgets import PREFLIGHT_ITERATIONS, CurvatureSizes
from advclaims.analysis.curvature.defence import Resampled
from advclaims.analysis.curvature.directions import (S_MAX_DEFAULT, S_MAX_FACTORS, ScoreCurves, class_departures,
                                                     class_transitions, partial_rank_correlation, rank_correlation)
from advclaims.analysis.curvature.subspaces import (FRACTION_DEFAULT, FRACTIONS, complement, deepfool_svd, nested_bases,
                                                    orthonormal_basis, project, project_images)
from advclaims.attacks.confined_deepfool import confined_deepfool
from advclaims.attacks.targeted_deepfool import targeted_deepfool

seeds = st.integers(0, 2**16)
SIDE, CLASSES = 4, 3
DIMS = SIDE * SIDE


def mlp(activation: nn.Module, seed: int = 0, dtype=torch.float64, hidden: int = 24) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(DIMS, hidden), activation, nn.Linear(hidden, CLASSES)).to(dtype).eval()


def images(seed: int, n: int = 5, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def operator(net, seed: int, h: float, n: int = 4) -> cv.CurvatureOperator:
    x = images(seed, n)
    return cv.CurvatureOperator(net, x, torch.tensor([1, 2] * (n // 2)), 0, h)


def margin_hessian(net, x: torch.Tensor, source: int, target: int = 0) -> torch.Tensor:
    """The exact autograd (double backward) Hessian of F_target - F_source at one image."""
    def f(v):
        logits = net(v.view(1, 1, SIDE, SIDE))
        return logits[0, target] - logits[0, source]
    return torch.autograd.functional.hessian(f, x.flatten())


@given(seed=seeds)
@settings(deadline=None, max_examples=10)
def test_on_a_smooth_net_the_central_difference_operator_is_the_exact_hessian_and_symmetric(seed):
    net = mlp(nn.Softplus(), seed)
    op = operator(net, seed, h=1e-3)
    cols = op.per_point(torch.eye(DIMS, dtype=torch.float64))          # (N, D, D): row j is H_n e_j
    for n in range(len(op.points)):
        exact = margin_hessian(net, op.points[n], int(op.sources[n]))
        assert torch.allclose(cols[n], exact, atol=1e-5 * (1 + exact.abs().max()))
    mean = cols.mean(0)
    assert (mean - mean.T).norm() <= 1e-5 * (mean + mean.T).norm()


@given(seed=seeds)
@settings(deadline=None, max_examples=10)
def test_on_a_relu_net_double_backward_sees_no_curvature_but_the_operator_does(seed):
    net = mlp(nn.ReLU(), seed, hidden=256)     # enough units that a step of h crosses some kink from some point
    op = operator(net, seed, h=cv.central_difference_step(images(seed, 64)), n=8)
    exact = margin_hessian(net, op.points[0], int(op.sources[0]))
    assert exact.abs().max() == 0                                      # piecewise linear: zero almost everywhere
    v = torch.randn(3, DIMS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert (op(v).norm(dim=1) > 0).all()


def test_the_operator_scales_with_the_probe_norm_but_always_steps_h():
    net = mlp(nn.ReLU(), 3)
    op = operator(net, 3, h=0.5)
    v = torch.randn(1, DIMS, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(op(5 * v), 5 * op(v), atol=1e-10)


@pytest.mark.parametrize("method", ["dense", "block_lanczos"])
def test_principal_directions_are_orthonormal_sorted_and_diagonalise_the_symmetric_operator(method):
    net = mlp(nn.Softplus(), 1)
    op = operator(net, 1, h=1e-3, n=6)
    g = torch.Generator().manual_seed(0)
    if method == "dense":
        curv, dirs, asym, sym = cv._dense(op, g)
    else:
        curv, dirs, asym, sym, _, _ = cv._block_lanczos(op, g, k=3)
    v = dirs.double()
    assert torch.allclose(v.T @ v, torch.eye(DIMS, dtype=v.dtype), atol=1e-5)
    finite = curv[torch.isfinite(curv)]
    assert (finite[1:] <= finite[:-1]).all()
    full = op(torch.eye(DIMS, dtype=torch.float64))                    # row j: H e_j
    symmetric = (full + full.T) / 2
    computed = torch.isfinite(curv).nonzero().squeeze(1)
    for i in computed:                                                 # each curvature is the one along its direction
        d = v[:, i]
        assert torch.isclose(d @ symmetric @ d, curv[i].double(), atol=1e-5 * symmetric.abs().max())
    # and the k at each end are eigenvectors: exactly for dense, to Krylov convergence for block Lanczos
    tol = 1e-4 * symmetric.abs().max() if method == "dense" else 1e-2 * curv[computed].abs().max()
    for i in torch.cat([computed[:3], computed[-3:]]):
        d = v[:, i]
        assert torch.allclose(symmetric @ d, curv[i].double() * d, atol=float(tol))
    assert float(asym.trace() / sym.trace()) < 1e-8                    # smooth net: symmetric operator


def test_block_lanczos_finds_the_same_extreme_curvatures_as_the_dense_decomposition():
    op = operator(mlp(nn.Softplus(), 2), 2, h=1e-3, n=6)
    dense, _, _, _ = cv._dense(op, torch.Generator().manual_seed(0))
    lanczos, *_ = cv._block_lanczos(op, torch.Generator().manual_seed(0), k=3)
    assert torch.allclose(lanczos[:3], dense[:3], rtol=1e-3, atol=1e-6)
    assert torch.allclose(lanczos[-3:], dense[-3:], rtol=1e-3, atol=1e-6)
    assert int(torch.isnan(lanczos).sum()) == 0         # at D = 16 the Krylov basis (3k) and the probes measure all


def test_block_lanczos_decomposes_the_symmetric_part_of_a_non_symmetric_operator():
    # a fixed non-symmetric matrix as the operator, as asymmetric as the ReLU operator measured (||A - A^T|| /
    # ||A + A^T|| about 0.35): the curvatures must be those of (A + A^T) / 2, as the dense path's are
    g = torch.Generator().manual_seed(7)
    s0 = torch.randn(DIMS, DIMS, generator=g, dtype=torch.float64)
    a = (s0 + s0.T) / 2 + 0.35 * torch.randn(DIMS, DIMS, generator=g, dtype=torch.float64)
    assert 0.2 < float((a - a.T).norm() / (a + a.T).norm()) < 0.5
    op = operator(mlp(nn.Softplus(), 2), 2, h=1e-3, n=2)
    op.per_point = lambda probes: (probes.double() @ a.T)[None]           # H v = A v at every point
    op.__call__ = None
    wanted = torch.linalg.eigvalsh((a + a.T) / 2).flip(0)
    lanczos = cv._block_lanczos(op, torch.Generator().manual_seed(0), k=3)[0]
    dense = cv._dense(op, torch.Generator().manual_seed(0))[0]
    assert torch.allclose(dense.double(), wanted, rtol=1e-4, atol=1e-5)
    assert torch.allclose(lanczos[:2].double(), wanted[:2], rtol=2e-2)
    assert torch.allclose(lanczos[-2:].double(), wanted[-2:], rtol=2e-2)


def test_flat_directions_rank_by_measured_curvature_not_by_position():
    # three Ritz directions (2, 0.001, -3) and an uncomputed rest whose measured curvature is 0.5: flattest
    # first is the 0.001 direction, then the rest, then 2, then -3
    eye = torch.eye(5)
    cc = cv.ClassCurvature(0, torch.tensor([2.0, float("nan"), float("nan"), 0.001, -3.0]), eye, eye, eye, eye, 2, 2,
                           0.0, "block Lanczos", 0.5)
    curv = cv.PrincipalCurvatures([cc], torch.zeros(1, 1, 5), h=1.0)
    assert curv.ordered(0, "flat").argmax(0).tolist() == [3, 1, 2, 0, 4]
    assert curv.direction(0, "flat").flatten().argmax() == 3


def test_flat_directions_rank_by_measured_norm_of_h_u_where_measured():
    # block Lanczos measures ||H u||: a direction whose u^T A u is 0 because +1 and -1 cancel (flatness 1) is not
    # flat; the 0.01 one is, then the rest (0.5), then the cancelling one
    eye = torch.eye(4)
    cc = cv.ClassCurvature(0, torch.tensor([2.0, 0.01, float("nan"), 0.0]), eye, eye, eye, eye, 2, 2, 0.0,
                           "block Lanczos", 0.5, torch.tensor([2.0, 0.01, float("nan"), 1.0]))
    assert cv.PrincipalCurvatures([cc], torch.zeros(1, 1, 4), h=1.0).ordered(0, "flat").argmax(0).tolist() == [1, 2, 3, 0]
    assert torch.equal(cv.ClassCurvature.load(cc.payload(), cc.meta()).abs_curvatures(), torch.tensor([2.0, 0.01, 0.5, 1.0]))


class PlantedOperator:
    """A symmetric operator of planted spectrum, applied as a matvec through the interface ``_block_lanczos``
    uses: ``curved`` eigenvalues on the columns of a random orthonormal C (D, r), and on its complement F a
    flat part P_F diag(s) P_F with |s| <= ``flat``. Principal angles to F come from C: sin = svdvals(C^T U)."""

    def __init__(self, dims: int, curved: torch.Tensor, flat: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.c = torch.linalg.qr(torch.randn(dims, len(curved), generator=g, dtype=torch.float64))[0]
        self.curved, self.dims, self.applied = curved, dims, 0
        self.s = flat * (2 * torch.rand(dims, generator=g, dtype=torch.float64) - 1)
        self.points = torch.zeros(1, dtype=torch.float64)        # the dtype the operator is applied in

    def out_of_c(self, v: torch.Tensor) -> torch.Tensor:
        return v - self.c @ (self.c.T @ v)

    def per_point(self, probes: torch.Tensor) -> torch.Tensor:
        v = probes.double().T
        self.applied += v.shape[1]
        return (self.c @ (self.curved[:, None] * (self.c.T @ v)) + self.out_of_c(self.s[:, None] * self.out_of_c(v))).T[None]

    def __call__(self, probes: torch.Tensor) -> torch.Tensor:
        return self.per_point(probes)[0]

    def angles_to_flat(self, u: torch.Tensor) -> torch.Tensor:
        """Principal angles (degrees) between span(u) (orthonormal columns) and the planted flat subspace F."""
        return torch.rad2deg(torch.arcsin(torch.linalg.svdvals(self.c.T @ u.double()).clamp(max=1)))


def planted_spectrum(tails: int, bulk: int, seed: int) -> torch.Tensor:
    """Curvatures of a net-like boundary: ``tails`` at each end, |k| from 10 to 1, and a curved bulk of ``bulk``
    with |k| log-uniform in [0.05, 1] and random signs, half of them cancelling the other half."""
    g = torch.Generator().manual_seed(seed)
    ends = torch.logspace(1, 0, tails, dtype=torch.float64)
    mag = torch.exp(torch.empty(bulk, dtype=torch.float64).uniform_(math.log(0.05), 0.0, generator=g))
    signs = torch.where(torch.rand(bulk, generator=g) < 0.5, -1.0, 1.0).double()
    return torch.cat([ends, -ends, mag * signs])


@pytest.mark.parametrize("dims, k", [(3072, 128), (768, 32)])
def test_block_lanczos_recovers_a_planted_flat_subspace_and_its_extremes(dims, k):
    # CIFAR's D = 3072 at the budget's k = 128 (and a fast D = 768): a sixth of the space curved (both tails and a
    # bulk of either sign), the rest flat (|k| <= 1e-3). The flattest directions the subspaces use (half the space
    # over 10 classes, per class) lie in the planted flat subspace; a random basis and an arbitrary basis of the
    # never-measured rest (what S_flat was before flat directions were searched for and ranked) do not
    curved = planted_spectrum(k, dims // 6 - 2 * k, seed=dims)
    op = PlantedOperator(dims, curved, 1e-3, seed=dims + 1)
    curv, dirs, _, _, rest, flatness = cv._block_lanczos(op, torch.Generator().manual_seed(0), k)
    assert op.applied <= 5.25 * k + 2 * 16 + 32                        # the cost: about 5k products, not D
    cc = cv.ClassCurvature(0, curv, dirs, torch.eye(1), torch.eye(1), torch.eye(1), 1, 1, 0.0, "block Lanczos",
                           rest, flatness)
    flat = cv.PrincipalCurvatures([cc], torch.zeros(dims), h=1.0).ordered(0, "flat")[:, :math.ceil(dims / 2 / 10)]
    f = flat.shape[1]
    recovered = op.angles_to_flat(flat)
    g = torch.Generator().manual_seed(2)
    random = op.angles_to_flat(torch.linalg.qr(torch.randn(dims, f, generator=g, dtype=torch.float64))[0])
    never = dirs[:, torch.isnan(curv)].double()
    arbitrary = op.angles_to_flat(never @ torch.linalg.qr(torch.randn(never.shape[1], f, generator=g,
                                                                      dtype=torch.float64))[0])
    assert float(recovered.median()) < 0.1 and float(recovered.max()) < 10.0          # measured: 0.001 and 4.9 deg
    assert float(random.median()) > 15.0 and float(arbitrary.max()) > 10.0            # 23 deg; 21 deg
    # the extremes: the most positive and most negative curvatures are the planted ones
    assert torch.allclose(curv[:5].double(), curved[:5], rtol=1e-3)
    assert torch.allclose(curv[-5:].double(), curved[k:k + 5].flip(0), rtol=1e-3)


def test_dense_and_block_lanczos_paths_of_algorithm_1_agree_on_a_small_smooth_convnet():
    # the same boundary points, decomposed densely and by block Lanczos (forced by a low dense limit)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Softplus(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(6 * 6 * 6, 4)).double().eval()
    candidates = torch.rand(64, 1, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-3
    dense = cv.class_curvature(net, candidates, 0, h=h, settings=CurvatureSizes(8, 1, 1, dense_limit=1024, batch=512))
    block = cv.class_curvature(net, candidates, 0, h=h, settings=CurvatureSizes(8, 1, 1, dense_limit=16, lanczos_k=16,
                                                                            batch=512))
    assert dense.method == "dense" and block.method.startswith("block Lanczos")
    assert torch.allclose(block.curvatures[:4], dense.curvatures[:4], rtol=1e-2)
    assert torch.allclose(block.curvatures[-4:], dense.curvatures[-4:], rtol=1e-2)
    for ends in (slice(0, 4), slice(-4, None)):     # the same principal subspaces at both ends
        cosines = torch.linalg.svdvals(dense.directions[:, ends].double().T @ block.directions[:, ends].double())
        assert cosines.min() > 0.98
    flat_dense, flat_block = (cv.PrincipalCurvatures([c], torch.zeros(1, 12, 12), h).direction(0, "flat").flatten()
                              for c in (dense, block))
    op = cv.CurvatureOperator(net, *cv.boundary_points(net, candidates, 0, points=8)[:2], 0, h)
    quotient = lambda d: float(d.double() @ op(d.double()[None])[0])  # noqa: E731
    scale = float(dense.curvatures.abs().max())
    assert abs(quotient(flat_block)) < 1e-2 * scale and abs(quotient(flat_dense)) < 1e-2 * scale


def test_block_lanczos_directions_are_orthonormal_even_when_the_relu_operator_is_not_symmetric():
    op = operator(mlp(nn.ReLU(), 4, hidden=256), 4, h=0.5, n=6)
    curv, dirs, asym, sym, *_ = cv._block_lanczos(op, torch.Generator().manual_seed(0), k=3)
    v = dirs.double()
    assert torch.allclose(v.T @ v, torch.eye(DIMS, dtype=v.dtype), atol=1e-5)
    assert float(asym.sum()) > 0                                       # the raw ReLU operator is asymmetric


@given(seed=seeds, n=st.integers(2, 8))
@settings(deadline=None, max_examples=20)
def test_gram_statistics_equal_the_norms_they_stand_for(seed, n):
    w = torch.randn(n, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s = torch.randn(n, 7, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    assert np.isclose(cv.gram_norm(w @ w.T).value, float(w.mean(0).norm()))
    assert np.isclose(cv.gram_ratio(w @ w.T, s @ s.T).value, float(w.mean(0).norm() / s.mean(0).norm()))


# ---------------------------------------------------------------------------------------------
# subspaces

dims_and_cols = st.tuples(st.integers(2, 12), st.integers(0, 14))


def random_columns(seed: int, dims: int, cols: int, repeat: bool) -> torch.Tensor:
    a = torch.randn(dims, cols, generator=torch.Generator().manual_seed(seed))
    if repeat and cols > 1:
        a[:, -1] = a[:, 0]                                             # a dependent column
    return a / a.norm(dim=0, keepdim=True).clamp_min(1e-12)


@given(seed=seeds, shape=dims_and_cols, repeat=st.booleans())
@settings(deadline=None, max_examples=40)
def test_subspace_projection_is_idempotent_orthogonal_and_complements_to_the_identity(seed, shape, repeat):
    dims, cols = shape
    q = orthonormal_basis(random_columns(seed, dims, cols, repeat))
    assert q.shape[1] <= min(dims, cols)
    v = torch.randn(5, dims, generator=torch.Generator().manual_seed(seed + 7))
    p = project(v, q)
    assert torch.allclose(project(p, q), p, atol=1e-5)                                   # idempotent
    assert torch.allclose((p * complement(v, q)).sum(1), torch.zeros(5), atol=1e-4)       # orthogonal parts
    assert torch.allclose(p + complement(v, q), v, atol=1e-6)                             # complement + projection
    x = torch.rand(5, 1, 1, dims, generator=torch.Generator().manual_seed(seed + 9))
    mean = torch.rand(1, 1, dims, generator=torch.Generator().manual_seed(seed + 8))
    assert torch.allclose(project_images(project_images(x, q, mean), q, mean), project_images(x, q, mean), atol=1e-5)


@given(seed=seeds, sizes=st.lists(st.integers(0, 5), min_size=1, max_size=5))
@settings(deadline=None, max_examples=30)
def test_nested_bases_span_exactly_the_columns_added_so_far(seed, sizes):
    dims = 9
    blocks = [random_columns(seed + i, dims, k, repeat=True) for i, k in enumerate(sizes)]
    for i, q in enumerate(nested_bases(blocks)):
        upto = torch.cat(blocks[:i + 1], 1)
        assert torch.allclose(q.T @ q, torch.eye(q.shape[1]), atol=1e-5)
        assert torch.allclose(project(upto.T, q), upto.T, atol=1e-4)                     # every column is inside
        assert q.shape[1] == torch.linalg.matrix_rank(upto.double(), atol=1e-5)


def test_deepfool_svd_orders_directions_and_splits_the_space():
    r = torch.randn(30, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    svd = deepfool_svd(r)
    assert torch.allclose(svd.vectors.T @ svd.vectors, torch.eye(DIMS), atol=1e-5)
    assert (svd.singular_values[1:] <= svd.singular_values[:-1] + 1e-6).all()
    assert torch.allclose(svd.hi(5).T @ svd.lo(DIMS - 5), torch.zeros(5, DIMS - 5), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# attacks


@given(seed=seeds, k=st.integers(1, DIMS))
@settings(deadline=None, max_examples=15)
def test_confined_deepfool_perturbations_stay_in_the_subspace(seed, k):
    net = mlp(nn.ReLU(), seed, dtype=torch.float32)
    x = images(seed, 6, dtype=torch.float32)
    q = torch.linalg.qr(torch.randn(DIMS, k, generator=torch.Generator().manual_seed(seed)))[0]
    res = confined_deepfool(net, x, q, max_iter=30)
    assert torch.allclose(complement(res.perturbation.flatten(1), q), torch.zeros(6, DIMS), atol=1e-4)
    with torch.no_grad():
        moved = net(x + res.perturbation).argmax(1)
    assert torch.equal(moved != res.original, res.success)


def test_unconfined_deepfool_with_the_full_space_reaches_the_boundary():
    net = mlp(nn.ReLU(), 5, dtype=torch.float32)
    x = images(5, 8, dtype=torch.float32)
    full = confined_deepfool(net, x, torch.eye(DIMS))
    assert full.success.all()
    assert torch.allclose(full.perturbation, confined_deepfool(net, x, None).perturbation, atol=1e-5)


@given(seed=seeds, target=st.integers(0, CLASSES - 1))
@settings(deadline=None, max_examples=15)
def test_targeted_deepfool_successes_are_predicted_as_the_target(seed, target):
    net = mlp(nn.ReLU(), seed, dtype=torch.float32)
    x = images(seed, 8, dtype=torch.float32)
    res = targeted_deepfool(net, x, target, max_iter=20)
    with torch.no_grad():
        final = net(x + res.perturbation).argmax(1)
    assert (final[res.success] == target).all()
    assert (res.perturbation[res.original == target] == 0).all()      # already the target: not attacked
    assert not res.success[res.original == target].any()


def test_resampling_at_full_size_is_the_identity_and_is_linear():
    net = mlp(nn.ReLU(), 0, dtype=torch.float32)
    x, z = images(0, 3, dtype=torch.float32), images(1, 3, dtype=torch.float32)
    assert torch.equal(Resampled(net, SIDE).resample(x), x)
    r = Resampled(net, 2)
    assert torch.allclose(r.resample(2 * x - z), 2 * r.resample(x) - r.resample(z), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# class-score curves: a model whose class-0 score is the squared component along a known direction


class Quadratic(nn.Module):
    """Logits (|u . x|^2 - 1, 0.5, 0.4): class 0 gains along +-u, loses nothing elsewhere."""

    def __init__(self, u):
        super().__init__()
        self.u = u

    def forward(self, x):
        a = (x.flatten(1) @ self.u) ** 2 - 1
        return torch.stack([a, torch.full_like(a, 0.5), torch.full_like(a, 0.4)], 1)


def test_transition_statistics_see_images_move_into_the_class_of_a_positive_direction():
    u = torch.zeros(DIMS)
    u[0] = 1.0
    net = Quadratic(u)
    x = torch.zeros(20, 1, SIDE, SIDE)
    s = torch.linspace(-6, 6, 13)                                      # out to twice the unit, the largest s_max
    other = torch.zeros(DIMS)
    other[1] = 1.0                                                     # a direction the model ignores
    dirs = torch.stack([u.view(1, SIDE, SIDE), other.view(1, SIDE, SIDE), u.view(1, SIDE, SIDE)])
    logits = torch.stack([torch.stack([net(x + t * dirs[c]) for t in s]) for c in range(CLASSES)])
    curves = ScoreCurves.from_logits("positive", s, logits, torch.zeros(20, dtype=torch.long), dirs, unit=3.0)
    m = class_transitions(curves)
    assert m.statistics["transition_at_max"].value == pytest.approx(0.5)   # into class 0, never into class 2
    # the other s_max: up to |s| = 1.5 the grid holds |s| = 1 only, where the class-0 score (0) stays below 0.5
    at = m.sensitivity["s_max"]
    assert set(at) == {"0.5", "2"}
    assert at["0.5"]["transition_at_max"].value == 0.0
    assert at["2"]["transition_at_max"].value == pytest.approx(0.5)
    assert m.statistics["transition_trend"].value > 0.8
    # every image is of class 1, whose direction the model ignores: none leaves
    assert class_departures(curves).statistics["departure_at_max"].value == 0.0


def test_departures_read_only_the_images_of_the_classes_whose_directions_were_measured():
    """A class subset (CurvatureSizes.classes, CIFAR-100 at smoke): directions for classes 0 and 1 only, images predicted
    as 0, 1 or 4. Class 0's images leave along its direction, class 1's stay, class 4's have no own direction and are
    left out (they once indexed past the directions)."""
    s = torch.linspace(-4, 4, 9)
    n_img = 6
    pred0 = torch.tensor([0, 0, 1, 1, 4, 4])
    pred = pred0.repeat(2, len(s), 1)                                  # (C=2, S, n): nothing moves ...
    pred[0, :, :2] = torch.where(s.abs()[:, None] > 1, torch.tensor(3), pred0[:2])   # ... but class 0's images leave
    field = torch.zeros(2, len(s), n_img)
    curves = ScoreCurves("negative", s, pred, field, field, field, field, torch.zeros(n_img, dtype=torch.long),
                         torch.zeros(2, 1, 2, 2), unit=2.0)
    m = class_departures(curves)
    assert m.n == 4 and m.values["images_of_measured_classes"] == 4 and m.values["images"] == 6
    assert m.statistics["departure_at_max"].value == pytest.approx(0.5)
    assert any("4 of 6 test images" in note for note in m.notes)


@given(seed=seeds, rank=st.integers(1, 12), extra=st.integers(1, 40))
@settings(deadline=None, max_examples=25)
def test_a_basis_of_more_columns_than_dimensions_spans_what_they_span(seed, rank, extra):
    # the D x D path (columns > D) and the k x k path (columns <= D) give the same span
    g = torch.Generator().manual_seed(seed)
    dims = 12
    span = torch.linalg.qr(torch.randn(dims, rank, generator=g, dtype=torch.float64))[0]
    few = span @ torch.randn(rank, rank, generator=g, dtype=torch.float64)                # rank columns
    many = span @ torch.randn(rank, dims + extra, generator=g, dtype=torch.float64)       # > D columns, same span
    many = many / many.norm(dim=0, keepdim=True)
    q_few, q_many = orthonormal_basis(few / few.norm(dim=0, keepdim=True)), orthonormal_basis(many)
    assert q_many.shape == (dims, rank)
    assert torch.allclose(q_many.T @ q_many, torch.eye(rank, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(q_many @ q_many.T, q_few @ q_few.T, atol=1e-8)


def test_a_preflight_whose_model_reaches_no_boundary_still_runs_the_decomposition_and_only_a_preflight_does():
    # a preflight's model (two batches of training) rarely reaches a boundary in capped DeepFool steps; the paper
    # budget's Lanczos at D = 3072 must still run there, on the candidates as stand-in points
    from advclaims.verdict import stats
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Softplus(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(6 * 6 * 6, 4)).double().eval()
    with torch.no_grad():                          # F_0 - F_1 = -1000 everywhere: no image reaches class 0's boundary
        net[-1].weight[0] = net[-1].weight[1]
        net[-1].bias[1] = 1e3
    candidates = torch.rand(64, 1, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    settings = CurvatureSizes(8, 1, 1, dense_limit=16, lanczos_k=16, batch=512)
    with pytest.raises(stats.Unmeasurable, match="reached the boundary from 0 of 64 images"):
        cv.class_curvature(net, candidates, 0, h=1e-3, settings=settings)
    with pytest.raises(RuntimeError, match="preflight"):
        cv.preflight_stand_ins(net, candidates, 0, 8, preflight=False)
    preflight = dataclasses.replace(settings, iteration_cap=PREFLIGHT_ITERATIONS)   # the preflight budget's sizes
    c = cv.class_curvature(net, candidates, 0, h=1e-3, settings=preflight)
    points, sources = cv.preflight_stand_ins(net, candidates, 1, 8, preflight=True)
    assert c.points == 8 and c.method.startswith("block Lanczos")
    assert torch.isfinite(c.curvatures[~c.curvatures.isnan()]).all() and c.directions.shape[0] == 144
    assert (sources != 1).all()                    # the prediction is the target: another class stands in


# ---------------------------------------------------------------------------------------------
# what holds by construction (checked here, not in expected/)


@pytest.mark.parametrize("dense_limit", [1024, 8])
def test_algorithm_1_directions_are_orthonormal_and_its_curvatures_sorted_on_a_relu_net(dense_limit):
    # by construction of the decomposition (eigh / Rayleigh-Ritz of the symmetric part), so CV-1 only reports it
    net = mlp(nn.ReLU(), 4, hidden=256)
    candidates = images(11, 64)
    settings = CurvatureSizes(6, 1, 1, dense_limit=dense_limit, lanczos_k=2, batch=512)
    classes = [cv.class_curvature(net, candidates, c, h=0.5, settings=settings) for c in range(CLASSES)]
    m = cv.principal_curvature_properties(cv.PrincipalCurvatures(classes, torch.zeros(1, SIDE, SIDE), 0.5))
    assert m.values["orthonormality_error"] < 1e-5
    assert m.values["unsorted_pairs"] == 0
    assert set(m.statistics) == {"relative_asymmetry", "hv_norm"}


def test_over_nested_subspaces_confined_deepfool_needs_less_norm_and_images_project_more_as_d_grows():
    # Fig. 5's two curves are monotone by construction: exactly so for a linear net, where DeepFool is exact
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(DIMS, 2)).eval()
    x = images(12, 10, dtype=torch.float32)
    basis = torch.linalg.qr(torch.randn(DIMS, DIMS, generator=torch.Generator().manual_seed(3)))[0]
    norms, projections = [], []
    for d in (2, 4, 8, 16):
        res = confined_deepfool(net, x, basis[:, :d])
        assert res.success.all()
        norms.append(res.perturbation.flatten(1).norm(dim=1))
        projections.append((x.flatten(1) @ basis[:, :d]).norm(dim=1))
    for smaller, larger in zip(norms, norms[1:]):
        assert (larger <= smaller * (1 + 1e-4)).all()
    for smaller, larger in zip(projections, projections[1:]):
        assert (larger >= smaller - 1e-6).all()


@given(seed=seeds, length=st.integers(2, 12), ties=st.booleans())
@settings(deadline=None, max_examples=30)
def test_the_vectorised_rank_correlation_is_spearmans_rho_row_by_row(seed, length, ties):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, length))
    y = rng.integers(0, 3, size=(4, length)).astype(float) if ties else rng.normal(size=(4, length))
    y[0] = 1.0                                                         # a constant row: no trend, 0
    rho = rank_correlation(x, y)
    assert np.allclose(rho, [stats.spearman_rho(a, b) for a, b in zip(x, y)])


def test_the_partial_rank_correlation_removes_a_shared_scale_that_the_plain_one_follows():
    # CV-9's confound, built: an image norm z; the projection is z times the share s of the image in the subspace;
    # the confined norm grows with z and falls with s. The plain rho follows z (positive); the partial rho
    # controlling for z sees the inverse relation of s (negative). Vectorised rows equal the formula row by row.
    rng = np.random.default_rng(0)
    z, share = rng.uniform(1, 10, 400), rng.uniform(0.2, 0.8, 400)
    projection, confined = z * share, z * (1.2 - share)
    assert stats.spearman_rho(projection, confined) > 0.3
    assert partial_rank_correlation(projection, confined, z) < -0.3
    x, y, w = rng.normal(size=(3, 5, 20))
    rxy, rxw, ryw = (np.array([stats.spearman_rho(a, b) for a, b in zip(u, v)]) for u, v in ((x, y), (x, w), (y, w)))
    assert np.allclose(partial_rank_correlation(x, y, w), (rxy - rxw * ryw) / np.sqrt((1 - rxw ** 2) * (1 - ryw ** 2)))
    assert partial_rank_correlation(z, projection, z) == 0.0                   # x follows z exactly: undefined, 0


def test_score_curves_are_cut_to_each_s_max_symmetrically():
    s = torch.linspace(-2, 2, 17)
    field = torch.arange(17.0)[None, :, None].expand(2, 17, 3)
    curves = ScoreCurves("flat", s, field.long(), field, field, field, field, torch.zeros(3), torch.zeros(2, 1, 1, 1),
                         unit=1.0)
    for factor, kept in ((0.5, 5), (1.0, 9), (2.0, 17)):
        cut = curves.within(factor)
        assert len(cut.s) == kept and torch.equal(cut.s, -cut.s.flip(0)) and cut.own.shape == (2, kept, 3)
    with pytest.raises(ValueError, match="beyond the computed grid"):
        curves.within(3.0)


def test_the_protocol_parameters_measured_are_those_expected_declares():
    specs = expected.load()
    for claim in ("CV-2", "CV-3", "CV-4", "CV-5"):
        (p,) = specs[claim].parameters
        assert (p.name, p.default, p.values) == ("s_max", S_MAX_DEFAULT, S_MAX_FACTORS)
    for claim in ("CV-6", "CV-7", "CV-8", "CV-9"):
        (p,) = specs[claim].parameters
        assert (p.name, p.default, p.values) == ("subspace_fraction", FRACTION_DEFAULT, FRACTIONS)


def test_the_smoke_budget_measures_cifar100s_first_ten_classes_and_every_class_of_a_ten_class_dataset():
    """CurvatureSizes.classes cuts only datasets with more classes: a 10-class dataset's keys and numbers do not
    depend on it; a preflight and per-dataset training sizes keep to their own rules."""
    from advclaims import budgets

    smoke = budgets.get("smoke")
    assert smoke.curvature.class_subset(10) is None and smoke.curvature.class_subset(100) == 10
    assert budgets.get("paper").curvature.class_subset(100) is None
    assert smoke.train_images("fashion_mnist") == smoke.train_subset
    assert smoke.train_images("cifar100") == 20000 and smoke.train_images("cifar10") == smoke.train_subset
    assert smoke.for_preflight().train_images("cifar100") == budgets.PREFLIGHT_TRAIN
    # evaluation images: CIFAR-10 at smoke reads 250, every other dataset (Fashion-MNIST's keys included) test_n
    assert smoke.test_images("cifar10") == 250 and smoke.test_images("fashion_mnist") == smoke.test_n == 500
    assert smoke.for_preflight().test_images("cifar10") == smoke.for_preflight().test_n
    assert "cifar10 250" in smoke.describe().splitlines()[0]


def test_a_proxy_holds_as_many_training_images_as_the_smoke_budget_trains_on():
    """`advclaims proxy-data` without --train writes what the smoke budget reads (CIFAR-100: 200 a class)."""
    from advclaims import budgets
    from advclaims.data import proxy

    smoke = budgets.get("smoke")
    for name in proxy.NAMES:
        assert proxy.default_train(name) == smoke.train_images(name), name
