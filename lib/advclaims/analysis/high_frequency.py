"""Analyses of "High frequency patterns play a key role in the generation of adversarial examples"
(claims HF-1 .. HF-4).

Only the paper's abstract is public, so every protocol here is ours (claims.md, high_frequency),
built to test what the abstract states: class-wise feature expectations are stable per layer
(HF-1); targeted adversarial features travel from the source class's mean to the target's (HF-2);
the attack lives in the perturbation's high frequencies (HF-3), which resemble the target class's
high-frequency spectrum (HF-4). Features are a stage's whole output, flattened; distances are
Euclidean; class means are over clean images. Stage hooks come from ``responses.stage_outputs``
and the filters from ``frequency``, as for local_properties. Each analysis is a measuring step on
the model and a statistics step on what it measured (``*_statistics``), so that tests can feed the
latter a case where the claim is false (labels shuffled, source and target swapped, ...).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sps

from .. import stats
from ..attacks import pgd
from ..evaluation import attack_batched, predict
from ..measurement import Measurement
from ..models import RESNET_STAGES
from ..pipeline import PIPELINE_VERSION, AdversarialSet, Pipeline, TrainedModel, attack_params
from . import frequency
from .high_frequency_figures import correlation_matrix, split_success, split_half_ratios, trajectory
from .responses import stage_outputs

LAYER_NAMES = {"conv1": "Conv1", "layer0": "Layer0", "layer1": "Layer1", "layer2": "Layer2",
               "layer3": "Layer3", "layer4": "Layer4"}
TARGETED_VERSION = 1        # bump when the targeted set's attack or target rule changes meaning
HIGH_BAND_FRACTION = 0.25   # HF-4: "high frequencies" lie beyond a radius of a quarter of the image side
SPLIT_RANGE = (1 / 8, 3 / 8)  # HF-3: the checked radii, as fractions of the image side, centred on 1/4
INTERMEDIATE = "layer2"     # HF-2: the middle residual stage, where the trajectory is checked half way
SMALLER_PER_CLASS = (50, 250)  # HF-1: images per class the ratio is also shown at (smoke's 500 images: ~50)


# ---------------------------------------------------------------------------------------------
# the targeted attack set (shared by HF-2, HF-3 and HF-4)


@dataclass
class TargetedSet(AdversarialSet):
    target: torch.Tensor | None = None   # (N,) the class each image was pushed toward (never its own)


def draw_targets(y: torch.Tensor, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """One target per image, uniform over the classes other than its label."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, (len(y),), generator=g)
    return (y.cpu() + shift) % num_classes


def targeted_pgd_set(pipeline: Pipeline, model: TrainedModel, dataset: str, *, seed: int = 0) -> TargetedSet:
    """Targeted PGD-20 (the evaluation attack of the common setting, descending the target's
    cross-entropy) on the budget's test images, cached in the store by model, attack and targets."""
    bundle = pipeline.dataset(dataset)
    x, y = bundle.test.images(), bundle.test.y
    target = draw_targets(y, bundle.info.num_classes, seed=seed)
    params = {**attack_params("pgd20", bundle.info.eps), "targeted": True}
    spec = {"model": model.key, "attack": "pgd20_targeted", "params": params, "dataset": dataset,
            "test_n": pipeline.budget.test_n, "seed": seed, "version": [PIPELINE_VERSION, TARGETED_VERSION],
            "targets": {"rule": "uniform over the other classes", "seed": seed,
                        "sha256": hashlib.sha256(target.numpy().tobytes()).hexdigest()}}

    def make():
        g = torch.Generator().manual_seed(seed)
        x_adv = attack_batched(pgd, model.module, x, target.to(x.device), batch_size=pipeline.budget.eval_batch,
                               generator=g, **params)
        return {"x_adv": x_adv.cpu(), "target": target}, {"images": len(y)}

    entry = pipeline.store.fetch("adversarial", spec, make, device=pipeline.device)
    return TargetedSet("pgd20_targeted", params, model.label, x, entry.payload["x_adv"].to(x.device), y, spec,
                       target=entry.payload["target"].to(y.device))


# ---------------------------------------------------------------------------------------------
# stage features


@torch.no_grad()
def stage_features(model: torch.nn.Module, x: torch.Tensor, *, layers: tuple[str, ...] = RESNET_STAGES,
                   batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Each stage's output per image, flattened to (N, D)."""
    parts = {name: [] for name in layers}
    for i in range(0, len(x), batch_size):
        out = stage_outputs(model, x[i:i + batch_size], layers)
        for name in layers:
            parts[name].append(out[name].flatten(1).float())
    return {name: torch.cat(p) for name, p in parts.items()}


def class_means(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, D) mean feature vector of each class."""
    onehot = torch.nn.functional.one_hot(y.to(features.device), num_classes).to(features.dtype)
    counts = onehot.sum(0)
    if (counts == 0).any():
        raise stats.Unmeasurable(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no images: no class mean")
    return (onehot.T @ features) / counts[:, None]


# ---------------------------------------------------------------------------------------------
# HF-1: split-half stability of class-wise feature expectations


def split_halves(y: torch.Tensor, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """0/1 per image: two disjoint halves of the images, stratified by class (seeded)."""
    g = torch.Generator().manual_seed(seed)
    y = y.cpu()
    half = torch.empty(len(y), dtype=torch.long)
    for c in range(num_classes):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < 2:
            raise stats.Unmeasurable(f"class {c} has {len(idx)} test images; a split-half mean needs at least 2")
        idx = idx[torch.randperm(len(idx), generator=g)]
        half[idx[: len(idx) // 2]] = 0
        half[idx[len(idx) // 2:]] = 1
    return half


def expected_ratio_statistic(features: torch.Tensor, y: torch.Tensor, num_classes: int):
    """The worst class's EXPECTED split-half ratio, sqrt(tr Sigma_c (1/n_A + 1/n_B)) / Delta_c, as a function of
    resampled image indices (vectorised for ``stats.bootstrap``); also returns the per-class ratios.

    For independent images E d(half-mean A, half-mean B)^2 = tr Sigma_c (1/n_A + 1/n_B), with n_A, n_B this
    split's half sizes, and Delta_c the distance from the class mean to the nearest other class mean (plug-in:
    its relative upward bias, (tr Sigma_c / n_c + tr Sigma_d / n_d) / (2 Delta_c^2), is ~1% at 1000 images a
    class). The
    expectation over random splits removes the noise of one split; a resample moves tr Sigma_c and Delta_c
    through their linearisations (per image: the squared distance to its class mean, the projection on each
    direction between class means), where resampling the half-means themselves would add the bootstrap's
    own noise to the very noise the ratio measures.
    """
    k = num_classes
    f = features.float()
    f = f - f.mean(0)                   # float32 suffices once centred: per-image values, accumulated in float64
    y = y.to(f.device)
    means = class_means(f, y, k).double()
    c_of, d_of = torch.triu_indices(k, k, 1)                                # the K(K-1)/2 pairs c < d
    diff = means[c_of] - means[d_of]
    directions = (diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-30)).float()
    projection = (f @ directions.T).double().cpu()                          # (N, P): on each mu_c - mu_d
    spread = (f - means[y].float()).square().sum(1).double().cpu()          # |f - mu_y|^2
    y = y.cpu()
    onehot = torch.nn.functional.one_hot(y, k).double()
    members = [torch.nonzero(y == c).flatten() for c in range(k)]
    nominal = torch.bincount(y, minlength=k).double()
    halves = 1 / torch.floor(nominal / 2) + 1 / torch.ceil(nominal / 2)   # 1/n_A + 1/n_B of this split
    pairs = torch.arange(len(c_of))
    diagonal = torch.arange(k)

    def ratios(idx: np.ndarray) -> torch.Tensor:
        """(K, B) expected split-half ratio of every class in each of B resamples (rows of idx)."""
        idx = torch.from_numpy(np.rint(np.atleast_2d(idx)).astype(np.int64))
        out = []
        for part in idx.split(256):
            w = torch.zeros(part.shape[0], len(y), dtype=torch.float64).scatter_add_(
                1, part, torch.ones_like(part, dtype=torch.float64))
            n_c = w @ onehot                                                # (B, K)
            trace = (w @ (onehot * spread[:, None])) / (n_c - 1).clamp_min(1)   # (B, K) unbiased tr Sigma_c
            proj = torch.stack([w[:, m] @ projection[m] for m in members], 1) / n_c[:, :, None]  # (B, K, P)
            between = (proj[:, c_of, pairs] - proj[:, d_of, pairs]).abs()    # (B, P): u_cd . (m_c - m_d)
            pairwise = torch.zeros(part.shape[0], k, k, dtype=torch.float64)
            pairwise[:, c_of, d_of] = pairwise[:, d_of, c_of] = between
            pairwise[:, diagonal, diagonal] = math.inf
            out.append(((trace * halves).sqrt() / pairwise.amin(-1)).T)
        return torch.cat(out, 1)

    def statistic(idx, axis=-1):
        idx = np.asarray(idx)
        worst = ratios(idx.reshape(-1, idx.shape[-1])).amax(0)
        return worst.numpy().reshape(idx.shape[:-1])

    return statistic, ratios


def one_split_ratios(features: torch.Tensor, y: torch.Tensor, half: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K,) the split-half ratio that one split ``half`` actually gives (no resampling)."""
    k = num_classes
    f = features.float() - features.float().mean(0)
    group = (y.to(f.device) + k * half.to(f.device)).long()
    sums = torch.zeros(2 * k, f.shape[1], device=f.device).index_add_(0, group, f).double()
    n_g = torch.bincount(group, minlength=2 * k).double()[:, None]
    within = (sums[:k] / n_g[:k] - sums[k:] / n_g[k:]).norm(dim=1)
    means = (sums[:k] + sums[k:]) / (n_g[:k] + n_g[k:])
    return (within / torch.cdist(means, means).fill_diagonal_(math.inf).amin(1)).cpu()


def first_per_class(y: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """Indices (sorted) of the first ``per_class`` images of every class, in the canonical test order."""
    keep = torch.cat([torch.nonzero(y.cpu() == c).flatten()[:per_class] for c in range(num_classes)])
    return keep.sort().values


def split_half_statistics(features: dict[str, torch.Tensor], y: torch.Tensor, num_classes: int, *, seed: int = 0
                          ) -> tuple[dict[str, stats.Estimate], list[dict]]:
    """Per stage: the worst class's expected split-half ratio with a percentile bootstrap CI over images
    (BCa's jackknife would cost one evaluation per image), and its table row, with the ratio one seeded
    split actually gives beside it."""
    half = split_halves(y, num_classes, seed=seed)
    index = np.arange(len(y), dtype=float)
    per_class_n = int(torch.bincount(y.cpu(), minlength=num_classes).min())
    estimates, rows = {}, []
    for layer, f in features.items():
        statistic, ratios = expected_ratio_statistic(f, y, num_classes)
        est = stats.bootstrap(statistic, index, method="percentile", seed=seed)
        expected = ratios(index).flatten()
        one_split = one_split_ratios(f, y, half, num_classes)
        estimates[f"worst_split_half_ratio_{layer}"] = est
        rows.append({"layer": LAYER_NAMES.get(layer, layer), "images_per_class": per_class_n, "images": len(y),
                     "dims": f.shape[1], "worst_class": int(expected.argmax()), "worst_ratio": est.value,
                     "worst_ratio_ci": [est.low, est.high], "median_ratio": float(expected.median()),
                     "worst_one_split": float(one_split.max()),
                     "median_one_split_over_expected": float((one_split / expected).median()),
                     "per_class": [round(float(r), 4) for r in expected]})
    return estimates, rows


def class_expectation_stability(model: TrainedModel, x: torch.Tensor, y: torch.Tensor, *, num_classes: int,
                                layers: tuple[str, ...] = RESNET_STAGES, seed: int = 0,
                                smaller_per_class: tuple[int, ...] = SMALLER_PER_CLASS,
                                batch_size: int = 500) -> Measurement:
    """HF-1: at every stage, each class's two split-half means lie far closer to each other than to
    the nearest other class's mean. Per stage: the worst class's ratio, with a bootstrap CI over images.

    The split-half distance is sampling noise (its expectation falls as 1/sqrt(images per class)), so the
    statistic is its expectation over random splits (``expected_ratio_statistic``) and the verdict is
    measured on ``x``, meant to be the whole test split; the table repeats it on the first
    ``smaller_per_class`` images of each class, to show how it depends on that number, and gives the
    ratio one seeded split actually yields beside it.
    """
    features = stage_features(model.module, x, layers=layers, batch_size=batch_size)
    statistics, rows = split_half_statistics(features, y, num_classes, seed=seed)
    per_class_n = rows[0]["images_per_class"]
    smaller = sorted(n for n in set(smaller_per_class) if 2 <= n < per_class_n)
    for n in smaller:
        keep = first_per_class(y, num_classes, n).to(y.device)
        rows += split_half_statistics({layer: f[keep.to(f.device)] for layer, f in features.items()}, y[keep],
                                      num_classes, seed=seed)[1]
    rows.sort(key=lambda r: r["images_per_class"])                       # stable: stages stay in order
    return Measurement(statistics=statistics, n=len(y), tables={"split_half_ratios": rows},
                       values={"images_per_class": per_class_n},
                       figures={"split_half_ratios": lambda path: split_half_ratios(
                           path, rows, title=f"{model.label}: split-half class-mean stability per stage")},
                       notes=[f"verdict on {len(y)} test images (at least {per_class_n} a class, halves stratified by "
                              f"class); the table repeats it at {', '.join(map(str, smaller)) or 'no other'} a class"])


# ---------------------------------------------------------------------------------------------
# HF-2: feature trajectories from source to target


def successful_attacks(model: TrainedModel, tset: TargetedSet, batch_size: int) -> tuple[torch.Tensor, dict]:
    """Images the model classifies correctly when clean and as the target once attacked."""
    clean_ok = predict(model.module, tset.x, batch_size=batch_size) == tset.y
    hit = predict(model.module, tset.x_adv, batch_size=batch_size) == tset.target
    keep = (clean_ok & hit).cpu()
    counts = {"images": len(tset.y), "clean_correct": int(clean_ok.sum()), "targeted_success": int(hit.sum()),
              "analysed": int(keep.sum())}
    if counts["analysed"] < 2:
        raise stats.Unmeasurable(f"targeted PGD succeeded on {counts['analysed']} correctly classified images; "
                                 f"the analysis needs at least 2 ({counts})")
    return keep, counts


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
                  f"target_shift_{layers[mid]}": stats.mean(shift[:, mid]),
                  f"nearer_target_fraction_{layers[-1]}": stats.mean((adv[:, -1] < 0).astype(float))}
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


def feature_trajectories(model: TrainedModel, tset: TargetedSet, *, num_classes: int,
                         layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """HF-2: per stage, d(f(x_adv), mu_target) / d(f(x_adv), mu_source) over successful targeted attacks
    (``trajectory_statistics`` says what is checked)."""
    keep, counts = successful_attacks(model, tset, batch_size)
    adv, clean = class_distances(model, tset, keep, num_classes=num_classes, layers=layers, batch_size=batch_size)
    statistics, rows, pair_curves = trajectory_statistics(adv, clean, tset.y.cpu()[keep].numpy(),
                                                          tset.target.cpu()[keep].numpy(), layers=layers)
    last = f"nearer_target_fraction_{layers[-1]}"
    summary = {last: statistics[last].value, f"{last}_ci": [statistics[last].low, statistics[last].high], **counts}
    return Measurement(statistics=statistics, n=int(keep.sum()), values={last: statistics[last].value},
                       tables={"trajectory": rows, "targeted_pgd20": [summary]},
                       figures={"trajectory": lambda path: trajectory(
                           path, rows, pair_curves, title=f"{model.label}: targeted PGD-20 feature trajectory")},
                       notes=[f"targeted PGD-20: {counts}; {last} is shown, not checked (successful targeted attacks "
                              f"are classified as the target, so it is near 1 by construction)"])


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


def frequency_split_success(model: TrainedModel, tset: TargetedSet, *, margin: float = 0.2,
                            batch_size: int = 500) -> Measurement:
    """HF-3: success (classified as the target) of x + low_pass(delta, r) and x + high_pass(delta, r),
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


def target_spectrum_correlation(model: TrainedModel, tset: TargetedSet, *, num_classes: int,
                                radius: float | None = None, confidence: float = 0.98,
                                batch_size: int = 500) -> Measurement:
    """HF-4: how often the target class's mean high-frequency spectrum is the one a successful targeted
    perturbation correlates with best, against chance 1/K. The interval is at ``confidence`` 0.98, so
    that its lower bound above chance is the one-sided p < 0.01 of claims.md (exact binomial test beside it)."""
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
