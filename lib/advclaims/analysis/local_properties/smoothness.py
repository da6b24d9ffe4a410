"""Spatial smoothness of adversarial perturbations (local_properties paper, Section 3.2, Fig. 3; LP-6).

For a perturbation delta = x_adv - x, per image and channel:
- neighbour correlation: Pearson correlation between every pixel and its right and lower neighbours
  (both pairs pooled): near 1 for locally consistent perturbations, near 0 for disordered ones;
- bound fraction: the share of pixels whose perturbation reaches the L-inf bound (|delta| = eps).
"""

from __future__ import annotations

from pathlib import Path

import torch

from advclaims.verdict import stats
from advclaims.evaluation import correct
from advclaims.verdict.measurement import Measurement, measures
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel
from advclaims.analysis.local_properties import figures as lpfig
from advclaims.analysis.local_properties.layers import same_images

BOUND_RTOL = 1e-3  # a pixel "reaches" eps when |delta| >= eps * (1 - BOUND_RTOL): float32 projection error


def neighbour_correlation(delta: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): correlation of horizontally and vertically adjacent values, pooled.
    A constant channel has no order to measure: 0."""
    a = torch.cat([delta[..., :, :-1].flatten(2), delta[..., :-1, :].flatten(2)], -1).double()
    b = torch.cat([delta[..., :, 1:].flatten(2), delta[..., 1:, :].flatten(2)], -1).double()
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denom = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    cov = (a * b).sum(-1)
    return torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov)).float()


def bound_fraction(delta: torch.Tensor, eps: float, *, rtol: float = BOUND_RTOL) -> torch.Tensor:
    """(N, C, H, W) -> (N, C): share of pixels with |delta| at the bound eps."""
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    return (delta.abs() >= eps * (1 - rtol)).float().flatten(2).mean(-1)


@measures("LP-6", ("neighbour_correlation_adv_minus_std", "bound_fraction_adv_minus_std"))
def perturbation_smoothness(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                            adv_set: AdversarialSet, grid_rows: int = 3) -> Measurement:
    """LP-6 (Fig. 3, Section 3.2): perturbations made on ADV are locally consistent (higher neighbour correlation) and reach
    the bound at least as often as those made on STD; per image means over channels, paired."""
    same_images(std_set, adv_set)
    eps = float(std_set.params["eps"])
    if float(adv_set.params["eps"]) != eps:
        raise ValueError("both sets must use the same eps")
    d_std, d_adv = std_set.x_adv - std_set.x, adv_set.x_adv - adv_set.x
    corr = {k: neighbour_correlation(d).mean(1).cpu().numpy() for k, d in (("std", d_std), ("adv", d_adv))}
    bound = {k: bound_fraction(d, eps).mean(1).cpu().numpy() for k, d in (("std", d_std), ("adv", d_adv))}
    statistics = {
        "neighbour_correlation_adv_minus_std": stats.mean_difference(corr["adv"], corr["std"]),
        "bound_fraction_adv_minus_std": stats.mean_difference(bound["adv"], bound["std"]),
    }
    rows = []
    for tag, label in (("std", std.label), ("adv", adv.label)):
        c, b = stats.mean(corr[tag]), stats.mean(bound[tag])
        rows.append({"model": label, "neighbour_correlation": c.value, "neighbour_correlation_ci": [c.low, c.high],
                     "bound_fraction": b.value, "bound_fraction_ci": [b.low, b.high]})

    # Fig. 3 shows images attacked successfully on both models; fall back to the first images
    fooled = ((correct(std.module, std_set.x_adv, std_set.y) == 0) & (correct(adv.module, adv_set.x_adv, adv_set.y) == 0)
              & (correct(std.module, std_set.x, std_set.y) == 1) & (correct(adv.module, adv_set.x, adv_set.y) == 1))
    idx = torch.nonzero(fooled).flatten()[:grid_rows]
    if len(idx) < grid_rows:
        idx = torch.cat([idx, torch.arange(grid_rows, device=idx.device)])[:grid_rows]
    with torch.no_grad():
        pred = {"std": std.module(std_set.x_adv[idx]).argmax(1).tolist(), "adv": adv.module(adv_set.x_adv[idx]).argmax(1).tolist()}
    captions = [f"y={int(std_set.y[i])}; {adv.label}->{pred['adv'][k]}, {std.label}->{pred['std'][k]}"
                for k, i in enumerate(idx.tolist())]
    panels = {adv.label: {"adv": adv_set.x_adv[idx].cpu().numpy(), "delta": d_adv[idx].cpu().numpy()},
              std.label: {"adv": std_set.x_adv[idx].cpu().numpy(), "delta": d_std[idx].cpu().numpy()}}
    nat = std_set.x[idx].cpu().numpy()

    def draw(path: Path) -> None:
        lpfig.perturbation_grid(path, nat, panels, eps=eps, captions=captions,
                                title=f"Fig. 3: {std_set.attack} perturbations made on {adv.label} and {std.label}")

    return Measurement(
        statistics=statistics, n=len(std_set.y),
        values={f"{t}_neighbour_correlation": float(corr[t].mean()) for t in corr}
        | {f"{t}_bound_fraction": float(bound[t].mean()) for t in bound},
        tables={"smoothness": rows}, figures={"fig3": draw},
    )
