"""Algorithm 1 of "With friends like these, who needs adversaries?" (Jetley, Lord & Torr, NeurIPS 2018):
mean principal curvature directions of each class's decision boundary, and claim CV-1.

Facts from the authors' public code (boundary_curvatures_one_target.m, hessian_numerical_matconvnet.m):
for target class c, sample training images not predicted as c; DeepFool them toward c (L2, at most
5 iterations); keep the successes and step back to x + 0.8 r; average over those points the Hessian of
the margin between the clean prediction ĉ and c; Hessian-vector products are central differences of
the gradient, H v = (g(x + h v) - g(x - h v)) / 2h with v scaled to unit norm (its norm multiplied back),
at the step h = sqrt(D) * (max - min) / 512 * 10; eigenvectors are sorted from most positive to most
negative curvature.

A ReLU network in eval mode is piecewise linear: its autograd input Hessian is zero almost everywhere.
The finite step is what measures curvature here; double backward is never used.

Sign: the authors differentiate F_ĉ - F_c. We differentiate the target's margin F_c - F_ĉ, so that a
positive curvature means what the paper's text says it means (Sec. 4, Fig. 2): moving along +-v pushes
images into c. The eigenvectors are the same; only the order is reversed.

Eigendecomposition, always of the operator's symmetric part: dense when D <= ``dense_limit`` (the operator
applied to a seeded random orthonormal basis, spreading each probe over the image as the authors' Lanczos
vectors are, then ``eigh`` of its symmetric part); otherwise block Lanczos with Rayleigh-Ritz on the symmetric
part of the operator restricted to a Krylov basis (``decomposition._block_lanczos``), for the k most positive and k most
negative curvatures, grown into the complement toward flat directions; flat directions are ranked by measured
|curvature| ||H u||, the never-measured rest by the median one of random directions inside it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from advclaims.verdict import stats
from advclaims.attacks import deepfool, frozen
from advclaims.budgets import CurvatureSizes
from advclaims.attacks.targeted_deepfool import targeted_deepfool
from advclaims.verdict.measurement import Measurement, measures
from advclaims.analysis.curvature import figures as cfig
from advclaims.analysis.curvature.decomposition import _block_lanczos, _dense

DEEPFOOL_ITER = 50     # the curvature claims' DeepFool (the authors' defaults: overshoot 0.02, at most 50 steps)
CONFINED_ITER = 100    # confined DeepFool's iterations (the authors')
BOUNDARY_ITER = 5      # targeted DeepFool's steps toward a boundary point (the authors')
STEP_BACK = 0.8        # the authors evaluate the Hessian at x + 0.8 r, just short of the boundary
STEP_FACTOR = 10.0     # cdiff_adj_fac of the authors' code ("the value used in the experiments in the paper was 10")


@dataclass
class Setup:
    """What the curvature claims share: the model, the test images, training images for DeepFool SVDs, the
    training-set mean image, the budget's sizes and the threat radius (for FGSM and universal perturbations)."""

    model: object                # advclaims.checkpoints.pipeline.TrainedModel
    test_x: torch.Tensor
    test_y: torch.Tensor
    svd_x: torch.Tensor
    mean_image: torch.Tensor
    settings: CurvatureSizes
    eps: float
    seed: int = 0                # the training seed; the method's random draws follow it
    class_subset: int | None = None  # the first classes measured (CurvatureSizes.class_subset); None: every class

    @property
    def net(self) -> nn.Module:
        return self.model.module

    @property
    def label(self) -> str:
        return f"{self.model.label} {self.model.spec['arch']}"


@dataclass
class DeepFoolSet:
    """DeepFool (the paper's defaults: overshoot 0.02, at most 50 steps) on a set of images."""

    perturbation: torch.Tensor   # x_adv - x, (N, C, H, W)
    success: torch.Tensor        # bool (N,)


def deepfool_set(model: nn.Module, x: torch.Tensor, *, batch: int = 500, max_iter: int = DEEPFOOL_ITER) -> DeepFoolSet:
    res = [deepfool(model, x[i:i + batch], max_iter=max_iter) for i in range(0, len(x), batch)]
    return DeepFoolSet(torch.cat([r.x_adv for r in res]) - x, torch.cat([r.success for r in res]))


def central_difference_step(images: torch.Tensor, factor: float = STEP_FACTOR) -> float:
    """The authors' h = sqrt(D) * (max - min) / 512 * factor, with D, max and min of the training images."""
    dims = images[0].numel()
    return float(dims ** 0.5 * float(images.max() - images.min()) / 512 * factor)


def boundary_points(model: nn.Module, candidates: torch.Tensor, target: int, *, points: int,
                    max_iter: int = BOUNDARY_ITER,
                    chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Points just short of the boundary toward ``target``: x + 0.8 r for successful targeted DeepFools.

    Candidates (a random order of training images) are attacked chunk by chunk until ``points`` succeed: the authors
    sample 100 images and keep the successes (about half, with 5 steps); a fixed number of points gives every class's
    mean Hessian the same support. Images already predicted as ``target`` are skipped, as the authors do.
    Returns (points, their clean predictions ĉ, how many candidates were attacked).
    """
    pts, src, attacked, found = [], [], 0, 0
    for i in range(0, len(candidates), chunk):
        res = targeted_deepfool(model, candidates[i:i + chunk], target, max_iter=max_iter)
        attacked += int((res.original != target).sum())
        pts.append((candidates[i:i + chunk] + STEP_BACK * res.perturbation)[res.success])
        src.append(res.original[res.success])
        found += int(res.success.sum())
        if found >= points:
            break
    return torch.cat(pts)[:points], torch.cat(src)[:points], attacked


def preflight_stand_ins(model: nn.Module, candidates: torch.Tensor, target: int, n: int, *,
                        preflight: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Points for a preflight (iteration counts capped) whose model, trained on two batches, reached no boundary in
    its capped DeepFool steps: the candidates themselves, with their predictions as the source classes (another
    class where the prediction is the target). The operator is defined at any point, so every later step
    (Lanczos or dense decomposition, subspaces, attacks in them) runs in the budget's shapes and memory; a
    preflight gives no verdict, so what the points mean does not matter there. Never used outside a preflight."""
    if not preflight:
        raise RuntimeError("stand-in boundary points are a preflight's only: outside one, too few points is unmeasurable")
    x = candidates[:n]
    with torch.no_grad(), frozen(model):
        logits = model(x)
    pred = logits.argmax(1)
    other = (target + 1) % logits.shape[1]
    return x, torch.where(pred == target, torch.full_like(pred, other), pred)


class CurvatureOperator:
    """v -> H_n v for each boundary point n: central differences of the gradient of F_c - F_ĉn."""

    def __init__(self, model: nn.Module, points: torch.Tensor, sources: torch.Tensor, target: int, h: float, *,
                 batch: int = 256):
        self.model, self.points, self.sources, self.target, self.h = model, points.detach(), sources, target, h
        self.batch = batch
        self.dims = points[0].numel()

    def gradients(self, x: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Gradient of F_target - F_source at each image (one backward: images do not interact in eval mode)."""
        out = []
        with frozen(self.model):
            for i in range(0, len(x), self.batch):
                xb = x[i:i + self.batch].detach().requires_grad_(True)
                logits = self.model(xb)
                margin = logits[:, self.target] - logits.gather(1, sources[i:i + self.batch, None]).squeeze(1)
                out.append(torch.autograd.grad(margin.sum(), xb)[0])
        return torch.cat(out).flatten(1)

    def per_point(self, probes: torch.Tensor) -> torch.Tensor:
        """H_n v for probes v (B, D): returns (N, B, D). Each v is scaled to unit norm and its norm multiplied back."""
        probes = probes.to(self.points)
        scale = probes.norm(dim=1).clamp_min(1e-30)
        unit = probes / scale[:, None]
        n, shape = len(self.points), self.points.shape[1:]
        chunk = max(1, self.batch // (2 * n))
        out = torch.empty(n, len(probes), self.dims, dtype=self.points.dtype, device=self.points.device)
        for b in range(0, len(probes), chunk):
            u = unit[b:b + chunk].view(-1, *shape)                          # (b, C, H, W)
            plus = (self.points[:, None] + self.h * u[None]).flatten(0, 1)  # (N*b, C, H, W)
            minus = (self.points[:, None] - self.h * u[None]).flatten(0, 1)
            src = self.sources.repeat_interleave(len(u))
            g = self.gradients(torch.cat([plus, minus]), torch.cat([src, src]))
            out[:, b:b + chunk] = ((g[:len(plus)] - g[len(plus):]) / (2 * self.h)).view(n, len(u), -1)
        return out * scale[None, :, None]

    def __call__(self, probes: torch.Tensor) -> torch.Tensor:
        """The mean operator H v = mean_n H_n v, for probes (B, D)."""
        return self.per_point(probes).mean(0)


@dataclass
class ClassCurvature:
    """Principal curvatures of one class's boundary: curvatures (D,) sorted descending (NaN where Lanczos left a
    direction uncomputed: the flat complement), directions (D, D) as columns, and the per-point Gram matrices from
    which CV-1's statistics are bootstrapped over boundary points."""

    target: int
    curvatures: torch.Tensor
    directions: torch.Tensor
    asym_gram: torch.Tensor     # <B_n, B_m>: antisymmetric parts of the per-point operators (or probe values)
    sym_gram: torch.Tensor      # <S_n, S_m>: symmetric parts
    hv_gram: torch.Tensor       # <H_n v, H_m v> for one random unit v
    points: int
    attacked: int
    seconds: float
    method: str
    uncomputed_curvature: float = float("nan")  # block Lanczos: median ||H z|| of random unit directions z in the
    #                                             never-measured rest of the space (NaN entries of ``curvatures``)
    flatness: torch.Tensor | None = None        # block Lanczos: measured ||H u|| of each direction (NaN: the rest);
    #                                             None: the directions are eigenvectors, |curvature| is it

    _META = ("target", "points", "attacked", "seconds", "method", "uncomputed_curvature")

    def payload(self) -> dict:
        out = {k: getattr(self, k) for k in ("curvatures", "directions", "asym_gram", "sym_gram", "hv_gram")}
        return out if self.flatness is None else {**out, "flatness": self.flatness}

    def meta(self) -> dict:
        return {k: getattr(self, k) for k in self._META}

    @classmethod
    def load(cls, payload: dict, meta: dict) -> "ClassCurvature":
        return cls(**{k: payload[k] for k in ("curvatures", "directions", "asym_gram", "sym_gram", "hv_gram")},
                   **{k: meta[k] for k in cls._META if k in meta}, flatness=payload.get("flatness"))

    def abs_curvatures(self) -> torch.Tensor:
        """Measured |curvature| of every direction, what flat directions are ranked by: ||H u|| where measured
        (block Lanczos; for an eigenvector of the symmetric part it is |curvature|), else |u^T A u|; a never-measured
        direction has the rest's measured median."""
        own = self.curvatures.abs() if self.flatness is None else self.flatness
        return own.nan_to_num(nan=abs(self.uncomputed_curvature))


def class_curvature(model: nn.Module, candidates: torch.Tensor, target: int, *, h: float, settings: CurvatureSizes,
                    seed: int = 0) -> ClassCurvature:
    """Algorithm 1 for one target class, from candidate training images in a random order."""
    start = time.perf_counter()
    points, sources, attacked = boundary_points(model, candidates, target, points=settings.boundary_points,
                                                max_iter=settings.iterations(BOUNDARY_ITER))
    if len(points) < 2 and settings.preflight:
        points, sources = preflight_stand_ins(model, candidates, target, settings.boundary_points, preflight=True)
    if len(points) < 2:
        raise stats.Unmeasurable(f"class {target}: DeepFool reached the boundary from {len(points)} of {attacked} images; "
                           f"Algorithm 1 needs at least 2 points")
    op = CurvatureOperator(model, points, sources, target, h, batch=settings.batch)
    g = torch.Generator().manual_seed(seed * 1000 + target)
    dims = op.dims
    v = torch.randn(1, dims, generator=g, dtype=torch.float64).float()
    hv = op.per_point(v / v.norm())[:, 0]                        # (N, D), on the model's device
    hv_gram = (hv @ hv.T).cpu()
    if dims <= settings.dense_limit:
        curv, dirs, asym, sym = _dense(op, g)
        rest, method, flatness = float("nan"), "dense", None
    else:
        curv, dirs, asym, sym, rest, flatness = _block_lanczos(op, g, settings.lanczos_k,
                                                               iterations=settings.iterations)
        method = f"block Lanczos k={settings.lanczos_k}"
    return ClassCurvature(target, curv, dirs, asym, sym, hv_gram, len(points), attacked,
                          time.perf_counter() - start, method, rest, flatness)


# ---------------------------------------------------------------------------------------------
# statistics bootstrapped over boundary points through their Gram matrices


def gram_norm(gram: torch.Tensor, **kw) -> stats.Estimate:
    """|| mean_n w_n || from the Gram matrix <w_n, w_m>, with a bootstrap interval over the points n."""
    g = gram.double().numpy()

    def stat(idx, axis=-1):
        i = idx.astype(int)
        sub = g[i[..., :, None], i[..., None, :]]
        return np.sqrt(np.clip(sub.sum((-1, -2)), 0, None)) / i.shape[-1]
    return stats.bootstrap(stat, np.arange(len(g), dtype=float), **kw)


def gram_ratio(num: torch.Tensor, den: torch.Tensor, **kw) -> stats.Estimate:
    """|| mean_n a_n || / || mean_n s_n || from Gram matrices, bootstrapped over the points n."""
    a, s = num.double().numpy(), den.double().numpy()

    def stat(idx, axis=-1):
        i = idx.astype(int)
        pick = (i[..., :, None], i[..., None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(np.clip(a[pick].sum((-1, -2)), 0, None) / s[pick].sum((-1, -2)))
    return stats.bootstrap(stat, np.arange(len(a), dtype=float), **kw)


@dataclass
class PrincipalCurvatures:
    """Algorithm 1 for every class of one model, with what the subspaces need: the training mean image."""

    classes: list[ClassCurvature]
    mean_image: torch.Tensor     # (C, H, W) pixel mean of the training images
    h: float
    model_label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def dims(self) -> int:
        return self.mean_image.numel()

    def direction(self, c: int, which: str) -> torch.Tensor:
        """Class c's most positively curved ("positive"), most negatively curved ("negative") or flattest ("flat")
        direction, as a unit image (C, H, W)."""
        return self.ordered(c, which)[:, 0].view_as(self.mean_image)

    def ordered(self, c: int, which: str) -> torch.Tensor:
        """Class c's directions (D, D) ordered for a subspace: most positive first, most negative first, or flattest
        first (smallest |curvature|; Lanczos' uncomputed complement counts as flattest)."""
        cc = self.classes[c]
        if which == "positive":
            return cc.directions
        if which == "negative":
            return cc.directions.flip(1)
        if which == "flat":  # smallest measured |curvature| first (the uncomputed rest ranks by its own)
            return cc.directions[:, cc.abs_curvatures().argsort(stable=True)]
        raise ValueError(f"unknown direction kind {which!r}: use positive, negative or flat")


@measures("CV-1", ("relative_asymmetry", "hv_norm"))
def principal_curvature_properties(curv: PrincipalCurvatures) -> Measurement:
    """CV-1 (Algorithm 1, Sec. 3, and the authors' code): a symmetric operator, and not the zero operator (statistics, bootstrapped over boundary points).

    Orthonormal directions and sorted curvatures hold by construction of the decomposition (eigh of the symmetric
    part, or Rayleigh-Ritz on it); they are reported as values and tested in tests/test_curvature.py."""
    ortho, unsorted, asym, hv, rows = [], 0, [], [], []
    for cc in curv.classes:
        v = cc.directions.double()
        ortho.append(float((v.T @ v - torch.eye(v.shape[1], dtype=v.dtype)).abs().max()))
        k = cc.curvatures[torch.isfinite(cc.curvatures)]
        unsorted += int((k[1:] > k[:-1]).sum())
        asym.append(gram_ratio(cc.asym_gram, cc.sym_gram) if float(cc.sym_gram.trace()) > 0 else None)
        hv.append(gram_norm(cc.hv_gram))
        rows.append({"class": cc.target, "boundary_points": cc.points, "attacked": cc.attacked,
                     "orthonormality_error": ortho[-1], "unsorted_pairs": int((k[1:] > k[:-1]).sum()),
                     "most_positive": float(k[0]), "most_negative": float(k[-1]),
                     "flattest": float(cc.abs_curvatures().min()),
                     "relative_asymmetry": asym[-1] and asym[-1].value,
                     "asym_ci": asym[-1] and [asym[-1].low, asym[-1].high],
                     "hv_norm": hv[-1].value, "hv_ci": [hv[-1].low, hv[-1].high],
                     "seconds": round(cc.seconds, 2), "method": cc.method})
    n = sum(cc.points for cc in curv.classes)
    measured = [e for e in asym if e is not None]      # a zero operator (every H_n = 0) has no symmetry to measure
    worst_asym = max(measured, key=lambda e: e.value) if measured else dataclasses.replace(
        stats.exact(0.0, n), uninformative="the operator is zero at every boundary point: symmetry is undefined")
    weakest_hv = min(hv, key=lambda e: e.value)
    return Measurement(
        statistics={"relative_asymmetry": worst_asym, "hv_norm": weakest_hv},
        n=n,
        values={"step_h": curv.h, "seconds_all_classes": sum(cc.seconds for cc in curv.classes),
                "orthonormality_error": max(ortho), "unsorted_pairs": unsorted},
        tables={"curvature_per_class": rows},
        figures={"spectra": lambda path: cfig.spectra(path, curv)},
        notes=curv.notes + [f"central-difference step h = {curv.h:.4g} (pixels in [0, 1]); "
                            f"{sum(cc.seconds for cc in curv.classes):.1f} s for all classes"],
    )
