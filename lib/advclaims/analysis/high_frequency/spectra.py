"""HF-3 and HF-4: the attack lives in the perturbation's high frequencies, which resemble the target class's.

Our protocols (only the abstract is public): HF-3 splits each perturbation into low- and high-pass parts and
compares their targeted success; HF-4 correlates a perturbation's high-band amplitude spectrum with every
class's mean one and counts how often the target ranks first, against chance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from advclaims.verdict import stats
from advclaims.evaluation import predict
from advclaims.verdict.measurement import Measurement, measures
from advclaims.checkpoints.artifacts import TrainedModel
from advclaims.analysis import frequency
from advclaims.analysis.high_frequency.figures import correlation_matrix, split_success
from advclaims.analysis.high_frequency.targeted import TargetedSet, class_means, successful_attacks

HIGH_BAND_FRACTION = 0.25   # HF-4: "high frequencies" lie beyond a radius of a quarter of the image side
SPLIT_RANGE = (1 / 8, 3 / 8)  # HF-3: the checked radii, as fractions of the image side, centred on 1/4


# ---------------------------------------------------------------------------------------------
# HF-3: attack success of the low- and high-frequency parts of a perturbation


def split_radii(size: int) -> list[int]:
    """The radii HF-3 checks: integers from 1/8 to 3/8 of the image side (28 px: 4..10)."""
    return list(range(math.ceil(SPLIT_RANGE[0] * size), math.floor(SPLIT_RANGE[1] * size) + 1))


def part_success(model: TrainedModel, tset: TargetedSet, keep: torch.Tensor, *, batch_size: int = 500) -> dict:
    """Per part ("low", "high") and radius r (0 to the full radius): per kept image, whether x + part of
    delta, clipped to [0, 1], is classified as the target ("success") and as anything but the label ("fooled");
    with "energy_low", the mean fraction of delta's power within r."""
    k = keep.to(tset.x.device)
    x, delta, tgt, y = tset.x[k], (tset.x_adv - tset.x)[k], tset.target[k], tset.y[k]
    h, w = x.shape[-2:]
    power = frequency.spectrum(delta).abs().square().sum(1)                   # (n, H, W), channels summed
    dist = frequency.radial_distance(h, w, power.device)
    out = {"success": {"low": {}, "high": {}}, "fooled": {"low": {}, "high": {}}, "energy_low": {}}
    for r in range(frequency.full_radius(h, w) + 1):
        for part, filt in (("low", frequency.low_pass), ("high", frequency.high_pass)):
            pred = predict(model.module, (x + filt(delta, r)).clamp(0, 1), batch_size=batch_size)
            out["success"][part][r] = (pred == tgt).float().cpu().numpy()
            out["fooled"][part][r] = (pred != y).float().cpu().numpy()
        out["energy_low"][r] = float((power[:, dist <= r].sum(1) / power.flatten(1).sum(1).clamp_min(1e-20)).mean())
    return out


def split_statistics(parts: dict, checked: list[int]) -> tuple[dict[str, stats.Estimate], list[dict]]:
    """Checked: the smallest over the ``checked`` radii of success(high) - success(low), paired over images."""
    success = parts["success"]
    samples = [success["high"][r] for r in checked] + [success["low"][r] for r in checked]

    def worst_gap(*s, axis=-1):
        hi, lo = np.stack(s[: len(checked)]), np.stack(s[len(checked):])
        return (hi.mean(axis) - lo.mean(axis)).min(0)

    rows = []
    for r in success["low"]:
        est_lo, est_hi = (stats.mean(success[p][r]) for p in ("low", "high"))
        rows.append({"radius": r, "checked": r in checked, "energy_low": parts["energy_low"][r],
                     "success_low": est_lo.value, "success_low_ci": [est_lo.low, est_lo.high],
                     "success_high": est_hi.value, "success_high_ci": [est_hi.low, est_hi.high],
                     "fooled_low": float(parts["fooled"]["low"][r].mean()),
                     "fooled_high": float(parts["fooled"]["high"][r].mean())})
    return {"min_success_high_minus_low": stats.bootstrap(worst_gap, *samples)}, rows


@measures("HF-3", ("min_success_high_minus_low",))
def frequency_split_success(model: TrainedModel, tset: TargetedSet, *, margin: float = 0.2,
                            batch_size: int = 500) -> Measurement:
    """HF-3 (abstract: "mainly caused by the formation of high-frequency patterns"; protocol ours): success
    (classified as the target) of x + low_pass(delta, r) and x + high_pass(delta, r),
    clipped to [0, 1], over successful targeted attacks, for every radius r; checked: the high part's
    success exceeds the low part's by more than ``margin`` (expected/) at every radius of ``split_radii``."""
    keep, counts = successful_attacks(model, tset, batch_size)
    h, w = tset.x.shape[-2:]
    checked = split_radii(min(h, w))
    statistics, rows = split_statistics(part_success(model, tset, keep, batch_size=batch_size), checked)
    return Measurement(statistics=statistics, n=int(keep.sum()),
                       tables={"split_success": rows, "targeted_pgd20": [counts]},
                       figures={"split_success": lambda path: split_success(
                           path, rows, margin=margin, title=f"{model.label}: targeted success of low/high parts of delta")},
                       notes=[f"checked radii {checked[0]}..{checked[-1]} of {h}x{w} images; targeted PGD-20: {counts}"])


# ---------------------------------------------------------------------------------------------
# HF-4: the perturbation's high frequencies resemble the target class's


def high_band(amplitude: torch.Tensor, radius: float) -> torch.Tensor:
    """(N, C*M) the amplitudes of the M frequencies beyond ``radius`` of a centred (N, C, H, W) spectrum."""
    outer = frequency.radial_distance(amplitude.shape[-2], amplitude.shape[-1], amplitude.device) > radius
    return amplitude.flatten(-2)[..., outer.flatten()].flatten(1)


def spectrum_correlations(delta: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          radius: float) -> torch.Tensor:
    """(N, K) Pearson correlation of each perturbation's high-band amplitude spectrum with each class's
    mean high-band amplitude spectrum (over ``images`` of that class)."""
    a = high_band(frequency.spectrum(delta).abs(), radius).double()
    s = class_means(high_band(frequency.spectrum(images).abs(), radius).double(), labels, num_classes)
    a = a - a.mean(1, keepdim=True)
    s = s - s.mean(1, keepdim=True)
    return (a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)) @ (s / s.norm(dim=1, keepdim=True).clamp_min(1e-12)).T


def spectrum_rank_statistics(corr: torch.Tensor, source, target, *, num_classes: int, confidence: float = 0.98
                             ) -> tuple[dict[str, stats.Estimate], dict, list[dict], np.ndarray]:
    """From (n, K) correlations: how often the target's class spectrum ranks first, minus chance 1/K
    (checked), with the summary, the per-target rows and the mean correlation matrix (row: target)."""
    corr, src, tgt = corr.cpu(), torch.as_tensor(source).cpu(), torch.as_tensor(target).cpu()
    first = corr.argmax(1)
    target_first = (first == tgt).double().numpy()
    chance = 1 / num_classes
    est = stats.mean(target_first, confidence=confidence)
    matrix = np.stack([corr[tgt == t].mean(0).numpy() if (tgt == t).any() else np.full(num_classes, np.nan)
                       for t in range(num_classes)])
    rows_idx = torch.arange(len(tgt))
    rank_of_target = (corr > corr[rows_idx, tgt][:, None]).sum(1) + 1
    others = corr.clone()
    others[rows_idx, src] = -math.inf                                          # rank among the non-source classes
    summary = {"target_first_rate": est.value, "chance": chance,
               "source_first_rate": float((first == src).double().mean()),
               "target_first_among_non_source": float((others.argmax(1) == tgt).double().mean()),
               "chance_among_non_source": 1 / (num_classes - 1),
               "mean_rank_of_target": float(rank_of_target.double().mean())}
    rows = [{"target": t, "perturbations": int((tgt == t).sum()),
             "target_first_rate": float((first[tgt == t] == t).double().mean()) if (tgt == t).any() else None,
             "correlations": [round(float(v), 4) for v in matrix[t]]} for t in range(num_classes)]
    return {"target_first_rate_minus_chance": est.shifted(chance)}, summary, rows, matrix


@measures("HF-4", ("target_first_rate_minus_chance",))
def target_spectrum_correlation(model: TrainedModel, tset: TargetedSet, *, num_classes: int,
                                radius: float | None = None, confidence: float = 0.98,
                                batch_size: int = 500) -> Measurement:
    """HF-4 (abstract: "high-frequency patterns widely present in the target category images"; protocol ours): how
    often the target class's mean high-frequency spectrum is the one a successful targeted
    perturbation correlates with best, against chance 1/K. The interval is at ``confidence`` 0.98, so
    that its lower bound above chance is the one-sided p < 0.01 of docs/claims.md (exact binomial test beside it)."""
    keep, counts = successful_attacks(model, tset, batch_size)
    radius = HIGH_BAND_FRACTION * tset.x.shape[-1] if radius is None else radius
    k = keep.to(tset.x.device)
    corr = spectrum_correlations((tset.x_adv - tset.x)[k], tset.x, tset.y, num_classes, radius)
    tgt = tset.target.cpu()[keep]
    statistics, summary, rows, matrix = spectrum_rank_statistics(corr, tset.y.cpu()[keep], tgt,
                                                                 num_classes=num_classes, confidence=confidence)
    hits = int(round(summary["target_first_rate"] * len(tgt)))
    return Measurement(
        statistics=statistics, n=len(tgt),
        tables={"summary": [{**summary, "radius": float(radius), **counts}], "by_target": rows},
        tests={"binomial": stats.binomial(hits, len(tgt), 1 / num_classes)},
        figures={"correlation_matrix": lambda path: correlation_matrix(
            path, matrix, title=f"{model.label}: high-band spectrum of delta (row: target) vs class mean (column)")},
        notes=[f"high band: radius > {radius:g} px; targeted PGD-20: {counts}"])
