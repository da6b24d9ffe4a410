"""HF-2: targeted adversarial features travel from the source class's mean toward the target's (our protocol).

Per stage, log d(f(x_adv), mu_target) / d(f(x_adv), mu_source) over successful targeted attacks; checked: the
ratio falls with depth, and at an intermediate stage the attack has already moved the features toward the target.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as sps

from advclaims.verdict import stats
from advclaims.verdict.measurement import Measurement, measures
from advclaims.models import RESNET_STAGES
from advclaims.checkpoints.artifacts import TrainedModel
from advclaims.analysis.high_frequency.figures import trajectory
from advclaims.analysis.high_frequency.targeted import (LAYER_NAMES, TargetedSet, class_means, stage_features,
                                                        successful_attacks)

INTERMEDIATE = "layer2"     # HF-2: the middle residual stage, where the trajectory is checked half way


def shift_name(layer: str) -> str:
    """HF-2's checked shift at the intermediate stage ``layer``."""
    return f"target_shift_{layer}"


def nearer_target_name(layer: str) -> str:
    """HF-2's shown (unchecked) share at the last stage ``layer``."""
    return f"nearer_target_fraction_{layer}"


# the intermediate and the last stage depend on ``layers``: every stage of RESNET_STAGES can be either
TRAJECTORY_STATISTICS = (("mean_spearman_ratio_vs_depth",) + tuple(shift_name(layer) for layer in RESNET_STAGES)
                         + tuple(nearer_target_name(layer) for layer in RESNET_STAGES))


# ---------------------------------------------------------------------------------------------
# HF-2: feature trajectories from source to target


def class_distances(model: TrainedModel, tset: TargetedSet, keep: torch.Tensor, *, num_classes: int,
                    layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(n, L, K) distances of the kept images' adversarial and clean features to every class's mean
    (class means over every clean image of the set), per stage."""
    clean = stage_features(model.module, tset.x, layers=layers, batch_size=batch_size)
    adv = stage_features(model.module, tset.x_adv[keep.to(tset.x_adv.device)], layers=layers, batch_size=batch_size)
    k = keep.to(tset.x.device)
    out_adv, out_clean = [], []
    for layer in layers:
        mu = class_means(clean[layer], tset.y, num_classes).double()
        out_adv.append(torch.cdist(adv[layer].double(), mu).cpu())
        out_clean.append(torch.cdist(clean[layer][k.to(clean[layer].device)].double(), mu).cpu())
    return torch.stack(out_adv, 1).numpy(), torch.stack(out_clean, 1).numpy()


def trajectory_statistics(adv_distances: np.ndarray, clean_distances: np.ndarray, source, target, *,
                          layers: tuple[str, ...] = RESNET_STAGES) -> tuple[dict[str, stats.Estimate], list[dict], dict]:
    """From (n, L, K) class-mean distances: per image, r = d(., mu_target) / d(., mu_source) per stage.

    Checked: the Spearman correlation of log r(adv) with depth (negative on average), and, at the
    intermediate stage, the shift log r(adv) - log r(clean) the attack causes (negative: moved toward
    the target). The last stage's nearer-target fraction is shown, not checked: a successful targeted
    attack is classified as the target, so its last-stage features lie near that mean almost by construction.
    """
    rows_idx = np.arange(len(source))
    source, target = np.asarray(source), np.asarray(target)

    def log_ratio(dist):
        return np.log(dist[rows_idx, :, target] / dist[rows_idx, :, source])   # (n, L)

    adv, clean = log_ratio(adv_distances), log_ratio(clean_distances)
    shift = adv - clean
    depth = np.arange(len(layers), dtype=float)
    rho = np.array([sps.spearmanr(depth, r).statistic if np.ptp(r) > 0 else 0.0 for r in adv])  # flat: no trend
    mid = layers.index(INTERMEDIATE) if INTERMEDIATE in layers else len(layers) // 2
    statistics = {"mean_spearman_ratio_vs_depth": stats.mean(rho),
                  shift_name(layers[mid]): stats.mean(shift[:, mid]),
                  nearer_target_name(layers[-1]): stats.mean((adv[:, -1] < 0).astype(float))}
    rows = []
    for j, layer in enumerate(layers):
        est, est_shift = stats.mean(adv[:, j]), stats.mean(shift[:, j])
        rows.append({"layer": LAYER_NAMES.get(layer, layer), "mean_log_ratio": est.value,
                     "mean_log_ratio_ci": [est.low, est.high], "geometric_mean_ratio": math.exp(est.value),
                     "mean_log_ratio_clean": float(clean[:, j].mean()), "mean_shift": est_shift.value,
                     "mean_shift_ci": [est_shift.low, est_shift.high],
                     "nearer_target_fraction": float((adv[:, j] < 0).mean())})
    pairs = {}
    for s, t, lr in zip(source.tolist(), target.tolist(), adv):
        pairs.setdefault((s, t), []).append(lr)
    return statistics, rows, {p: np.mean(v, 0).tolist() for p, v in pairs.items()}


@measures("HF-2", TRAJECTORY_STATISTICS)
def feature_trajectories(model: TrainedModel, tset: TargetedSet, *, num_classes: int,
                         layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """HF-2 (abstract: "a feature trajectory from origins to targets"; protocol ours): per stage,
    d(f(x_adv), mu_target) / d(f(x_adv), mu_source) over successful targeted attacks
    (``trajectory_statistics`` says what is checked)."""
    keep, counts = successful_attacks(model, tset, batch_size)
    adv, clean = class_distances(model, tset, keep, num_classes=num_classes, layers=layers, batch_size=batch_size)
    statistics, rows, pair_curves = trajectory_statistics(adv, clean, tset.y.cpu()[keep].numpy(),
                                                          tset.target.cpu()[keep].numpy(), layers=layers)
    last = nearer_target_name(layers[-1])
    summary = {last: statistics[last].value, f"{last}_ci": [statistics[last].low, statistics[last].high], **counts}
    return Measurement(statistics=statistics, n=int(keep.sum()), values={last: statistics[last].value},
                       tables={"trajectory": rows, "targeted_pgd20": [summary]},
                       figures={"trajectory": lambda path: trajectory(
                           path, rows, pair_curves, title=f"{model.label}: targeted PGD-20 feature trajectory")},
                       notes=[f"targeted PGD-20: {counts}; {last} is shown, not checked (successful targeted attacks "
                              f"are classified as the target, so it is near 1 by construction)"])


