"""The down-sampling defence (curvature paper, Sec. 4.4, Table 1): claim CV-10.

A pre-processing unit resizes the input down to d_low pixels a side and back up (bicubic, as the paper's
resizing; antialiased on the way down, as MATLAB's imresize is by default) before the network. DeepFool
perturbations of the original network are transferred, scaled by f (fooling rate: the fraction of images whose
defended prediction changes); then DeepFool on the defended network itself, confined to the span of the defended
network's own DeepFool perturbations (top d_low^2 singular vectors: the resampled input space has d_low^2 pixels
per channel), attacks it directly. d_low follows the paper's ratios to the input side (200..100 of 227).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advclaims.verdict import stats
from advclaims.accel import nondeterministic_allowed
from advclaims.attacks.confined_deepfool import confined_deepfool
from advclaims.evaluation import correct, predict
from advclaims.verdict.measurement import Measurement, measures
from advclaims.analysis.curvature import figures as cfig
from advclaims.analysis.curvature.operator import CONFINED_ITER, DEEPFOOL_ITER, Setup, deepfool_set
from advclaims.analysis.curvature.directions import level_trend
from advclaims.analysis.curvature.subspaces import deepfool_svd

PAPER_SIDES = (227, 200, 150, 120, 100)        # Table 1's d_low for AlexNet's 227-pixel input
SCALES = (1, 2, 3, 4, 5, 10)                   # Table 1's f


def low_sides(size: int) -> list[int]:
    """d_low for an input of ``size`` pixels a side, at the paper's ratios d_low / 227."""
    return [max(2, round(size * s / PAPER_SIDES[0])) for s in PAPER_SIDES]


def _bicubic_resample(x: torch.Tensor, side: int) -> torch.Tensor:
    low = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(low, size=x.shape[-2:], mode="bicubic", align_corners=False)


class _Resample(torch.autograd.Function):
    """The resampling with its backward (the same interpolate kernels, recomputed) run inside
    ``nondeterministic_allowed``: CUDA has no deterministic bicubic/antialiased interpolate backward, so under
    --repro-deterministic it warns (and the report lists it) instead of raising in DeepFool on the defended net."""

    @staticmethod
    def forward(ctx, x, side):
        ctx.save_for_backward(x)
        ctx.side = side
        return _bicubic_resample(x, side)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad(), nondeterministic_allowed():
            xg = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(_bicubic_resample(xg, ctx.side), xg, grad)
        return gx, None


class Resampled(nn.Module):
    """x -> model(up(down(x))): bicubic down to d_low pixels a side and back up to the input size."""

    def __init__(self, model: nn.Module, side: int):
        super().__init__()
        self.model, self.side = model, side

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.side == x.shape[-1]:
            return x
        if torch.is_grad_enabled() and x.requires_grad:
            return _Resample.apply(x, self.side)
        return _bicubic_resample(x, self.side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.resample(x))


def relative_drop(before, after, axis=-1):
    """(mean(before) - mean(after)) / mean(before): an accuracy cost as a share of clean accuracy."""
    b = np.mean(before, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (b - np.mean(after, axis=axis)) / b


@measures("CV-10", ("relative_accuracy_drop", "fooling_drop_at_f1", "fooling_trend_with_f", "fooling_gain_f10_over_f1",
                    "confined_success", "confined_norm_ratio"))
def downsampling_defence(setup: Setup, transferred, *, d_low: int | None = None) -> Measurement:
    """CV-10 (Table 1 and Sec. 4.4): the down-sampling defence costs accuracy and the defended net stays
    attackable. ``transferred``: DeepFool perturbations of the original network on the test images (with
    their success); the setup's SVD images give the defended network's own DeepFool perturbations. The checks are
    read at ``d_low`` (default: the paper's strongest compression, 100 of 227)."""
    model, x, y, label = setup.net, setup.test_x, setup.test_y, setup.label
    delta, delta_success = transferred.perturbation, transferred.success
    svd_images, mean_image, confined_images = setup.svd_x, setup.mean_image, setup.settings.confined_images
    size = x.shape[-1]
    sides = low_sides(size)
    clean = correct(model, x, y).cpu().numpy()
    ok = delta_success.cpu().numpy()                 # transfer only perturbations that fool the original network
    rows, fooled_at = [], {}
    for side in sides:
        net = Resampled(model, side).eval()
        pred = predict(net, x)
        acc = (pred == y).float().cpu().numpy()
        fooled = {f: (predict(net, x + f * delta) != pred).float().cpu().numpy()[ok] for f in SCALES}
        fooled_at[side] = fooled
        resampled_delta = net.resample(x + delta) - net.resample(x)
        rows.append({"d_low": side, "image_norm": float((x - mean_image.to(x)).flatten(1).norm(dim=1).mean()),
                     "perturbation_norm": float(resampled_delta.flatten(1).norm(dim=1)[delta_success].mean()),
                     "accuracy": float(acc.mean()), **{f"fooling_f{f}": float(v.mean()) for f, v in fooled.items()}})
    side = sides[-1] if d_low is None else d_low      # the paper's strongest compression, 100 of 227
    net = Resampled(model, side).eval()
    acc_def = (predict(net, x) == y).float().cpu().numpy()
    fooled = fooled_at[side] if side in fooled_at else {
        f: (predict(net, x + f * delta) != predict(net, x)).float().cpu().numpy()[ok] for f in SCALES}
    # the defended network's own attack space: the SVD of its DeepFool perturbations, top side^2 directions
    own = deepfool_set(net, svd_images, max_iter=setup.settings.iterations(DEEPFOOL_ITER))
    svd = deepfool_svd(own.perturbation[own.success])
    k = min(side * side * x.shape[1], int((svd.singular_values > 1e-6 * svd.singular_values[0]).sum()))
    xs, ds, oks = x[:confined_images], delta[:confined_images], delta_success[:confined_images]
    confined = confined_deepfool(net, xs, svd.hi(k).to(x), max_iter=setup.settings.iterations(CONFINED_ITER))
    both = (confined.success & oks).cpu()
    if int(both.sum()) < 2:
        raise stats.Unmeasurable(f"confined DeepFool fooled the defended net on {int(confined.success.sum())} of "
                                 f"{len(xs)} images, {int(both.sum())} of them also fooled by the original DeepFool; "
                                 f"the norm ratio needs at least 2")
    conf_norm = confined.perturbation.flatten(1).norm(dim=1).cpu().numpy()[both.numpy()]
    orig_norm = ds.flatten(1).norm(dim=1).cpu().numpy()[both.numpy()]
    f_levels = np.array(SCALES, dtype=float)
    per_image = np.stack([fooled[f] for f in SCALES], 1)           # (n, len(SCALES))
    if clean.mean() == 0:
        raise stats.Unmeasurable("the undefended net classifies none of the test images: no accuracy cost to share")
    statistics = {
        "relative_accuracy_drop": stats.bootstrap(relative_drop, clean, acc_def),
        "fooling_drop_at_f1": stats.mean(1.0 - fooled[1]),
        "fooling_trend_with_f": level_trend(per_image, f_levels),
        "fooling_gain_f10_over_f1": stats.mean_difference(fooled[10], fooled[1]),
        "confined_success": stats.mean(confined.success.float().cpu().numpy()),
        "confined_norm_ratio": stats.ratio_of_means(conf_norm, orig_norm),
    }
    return Measurement(
        statistics=statistics, n=len(y),
        values={"d_low": side, "clean_accuracy": float(clean.mean()), "defended_accuracy": float(acc_def.mean()),
                "accuracy_drop": float(clean.mean() - acc_def.mean()),
                "fooling_f1": float(fooled[1].mean()), "fooling_f10": float(fooled[10].mean()),
                "confined_subspace_dims": k, "confined_mean_norm": float(conf_norm.mean()),
                "original_deepfool_mean_norm": float(orig_norm.mean())},
        tables={"table1": rows,
                "confined_attack": [{"d_low": side, "subspace_dims": k, "success": float(confined.success.float().mean()),
                                     "confined_norm": float(conf_norm.mean()), "undefended_deepfool_norm":
                                     float(orig_norm.mean()), "images": int(both.sum())}]},
        notes=[f"d_low {sides} for {size}-pixel images (the paper's {list(PAPER_SIDES)} of 227); "
               f"fooling rates over the {int(ok.sum())} images whose DeepFool fooled the original network"],
        figures={"table1_fooling": lambda path: cfig.fooling_rates(path, rows, SCALES, title=(
            f"Table 1: down-sampling defence ({label})"))},
    )
