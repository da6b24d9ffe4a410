"""Analyses of "High frequency patterns play a key role in the generation of adversarial examples"
(claims HF-1 .. HF-4).

Only the paper's abstract is public, so every protocol here is ours (claims.md, high_frequency),
built to test what the abstract states: class-wise feature expectations are stable per layer
(HF-1); targeted adversarial features travel from the source class's mean to the target's (HF-2);
the attack lives in the perturbation's high frequencies (HF-3), which resemble the target class's
high-frequency spectrum (HF-4). Features are a stage's whole output, flattened; distances are
Euclidean; class means are over the clean evaluation images. Stage hooks come from
``responses.stage_outputs`` and the filters from ``frequency``, as for local_properties.
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
from ..pipeline import PIPELINE_VERSION, AdversarialSet, DatasetBundle, Pipeline, TrainedModel, attack_params
from . import frequency
from .high_frequency_figures import correlation_matrix, split_success, split_half_ratios, trajectory
from .responses import stage_outputs

LAYER_NAMES = {"conv1": "Conv1", "layer0": "Layer0", "layer1": "Layer1", "layer2": "Layer2",
               "layer3": "Layer3", "layer4": "Layer4"}
TARGETED_VERSION = 1        # bump when the targeted set's attack or target rule changes meaning
HIGH_BAND_FRACTION = 0.25   # HF-4: "high frequencies" lie beyond a radius of a quarter of the image side
SPLIT_RANGE = (1 / 8, 3 / 8)  # HF-3: the checked radii, as fractions of the image side, centred on 1/4


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


def split_half_statistic(features: torch.Tensor, y: torch.Tensor, half: torch.Tensor, num_classes: int):
    """The worst class's ratio d(half-mean A, half-mean B) / d(class mean, nearest other class mean),
    as a function of resampled image indices (vectorised for ``stats.bootstrap``).

    Distances come from the Gram matrix of centred features, so a resample costs O(N^2), not O(N D).
    """
    dev = features.device
    f = features.double()
    f = f - f.mean(0)                   # distances are translation-invariant; centring avoids cancellation
    gram = f @ f.T
    k = num_classes
    group = (y.to(dev) + k * half.to(dev)).long()  # A_c = c, B_c = K + c
    members = [torch.nonzero(group == g).flatten() for g in range(2 * k)]

    def ratios(idx: np.ndarray) -> torch.Tensor:
        """(K, B) split-half ratio of every class in each of B resamples (rows of idx)."""
        idx = torch.from_numpy(np.rint(np.atleast_2d(idx)).astype(np.int64)).to(dev)
        counts = torch.zeros(idx.shape[0], len(group), dtype=torch.float64, device=dev)
        counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
        c = counts.T                                                       # (N, B)
        y_h = torch.stack([gram[:, m] @ c[m] for m in members], 1)         # (N, 2K, B)
        m_gh = torch.stack([(c[m, None, :] * y_h[m]).sum(0) for m in members])  # (2K, 2K, B) unnormalised
        n_g = torch.stack([c[m].sum(0) for m in members])                  # (2K, B)
        m_gh = m_gh / (n_g[:, None] * n_g[None, :])
        a = torch.arange(k, device=dev)
        within = m_gh[a, a] + m_gh[a + k, a + k] - 2 * m_gh[a, a + k]
        w_a = n_g[:k] / (n_g[:k] + n_g[k:])                                # full mean = w_a A + (1 - w_a) B
        q = torch.zeros(k, 2 * k, m_gh.shape[-1], dtype=torch.float64, device=dev)
        q[a, a], q[a, a + k] = w_a, 1 - w_a
        full = torch.einsum("cgb,ghb,dhb->cdb", q, m_gh, q)
        diag = full[a, a]
        between = diag[:, None] + diag[None, :] - 2 * full
        between[a, a] = math.inf
        return within.clamp_min(0).sqrt() / between.clamp_min(0).sqrt().amin(1)

    def statistic(idx, axis=-1):
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        worst = torch.cat([ratios(chunk).amax(0) for chunk in np.array_split(flat, max(1, len(flat) // 250))])
        return worst.cpu().numpy().reshape(idx.shape[:-1])

    return statistic, ratios


def class_expectation_stability(model: TrainedModel, data: DatasetBundle, *, layers: tuple[str, ...] = RESNET_STAGES,
                                seed: int = 0, batch_size: int = 500) -> Measurement:
    """HF-1: at every stage, each class's two split-half means lie far closer to each other than to
    the nearest other class's mean. Per stage: the worst class's ratio, with a bootstrap CI over images."""
    x, y, k = data.test.images(), data.test.y, data.info.num_classes
    half = split_halves(y, k, seed=seed)
    feats = stage_features(model.module, x, layers=layers, batch_size=batch_size)
    index = np.arange(len(y), dtype=float)
    statistics, rows = {}, []
    for layer in layers:
        statistic, ratios = split_half_statistic(feats[layer], y, half, k)
        est = stats.bootstrap(statistic, index)
        per_class = ratios(index).flatten().cpu()
        statistics[f"worst_split_half_ratio_{layer}"] = est
        rows.append({"layer": LAYER_NAMES.get(layer, layer), "dims": feats[layer].shape[1],
                     "worst_class": int(per_class.argmax()), "worst_ratio": est.value,
                     "worst_ratio_ci": [est.low, est.high], "median_ratio": float(per_class.median()),
                     "per_class": [round(float(r), 4) for r in per_class]})
    return Measurement(statistics=statistics, n=len(y), tables={"split_half_ratios": rows},
                       figures={"split_half_ratios": lambda path: split_half_ratios(
                           path, rows, title=f"{model.label}: split-half class-mean stability per stage")},
                       notes=[f"halves: {int((half == 0).sum())} / {int((half == 1).sum())} images, stratified by class"])


# ---------------------------------------------------------------------------------------------
# HF-2: feature trajectories from source to target


def _succeeded(model: TrainedModel, tset: TargetedSet, batch_size: int) -> tuple[torch.Tensor, dict]:
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


def feature_trajectories(model: TrainedModel, tset: TargetedSet, *, num_classes: int,
                         layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """HF-2: per stage, d(f(x_adv), mu_target) / d(f(x_adv), mu_source) over successful targeted attacks.

    Checked: the per-image Spearman correlation of that ratio with depth is negative on average, and
    at the last stage more than half of the adversarial features lie nearer the target's mean.
    """
    keep, counts = _succeeded(model, tset, batch_size)
    clean = stage_features(model.module, tset.x, layers=layers, batch_size=batch_size)
    adv = stage_features(model.module, tset.x_adv[keep.to(tset.x_adv.device)], layers=layers, batch_size=batch_size)
    src, tgt = tset.y.cpu()[keep], tset.target.cpu()[keep]
    rows_idx = torch.arange(len(src))
    log_ratio = []
    for layer in layers:
        mu = class_means(clean[layer], tset.y, num_classes)
        dist = torch.cdist(adv[layer].double(), mu.double()).cpu()     # (n, K)
        log_ratio.append(torch.log(dist[rows_idx, tgt] / dist[rows_idx, src]))
    log_ratio = torch.stack(log_ratio, 1).numpy()                     # (n, L)
    depth = np.arange(len(layers), dtype=float)
    rho = np.array([sps.spearmanr(depth, r).statistic if np.ptp(r) > 0 else 0.0 for r in log_ratio])  # flat: no trend
    nearer_target = (log_ratio[:, -1] < 0).astype(float)
    statistics = {"mean_spearman_ratio_vs_depth": stats.mean(rho),
                  f"nearer_target_fraction_{layers[-1]}": stats.mean(nearer_target)}
    rows = []
    for j, layer in enumerate(layers):
        est = stats.mean(log_ratio[:, j])
        rows.append({"layer": LAYER_NAMES.get(layer, layer), "mean_log_ratio": est.value,
                     "mean_log_ratio_ci": [est.low, est.high], "geometric_mean_ratio": math.exp(est.value),
                     "nearer_target_fraction": float((log_ratio[:, j] < 0).mean())})
    pairs = {}
    for s, t, lr in zip(src.tolist(), tgt.tolist(), log_ratio):
        pairs.setdefault((s, t), []).append(lr)
    pair_curves = {p: np.mean(v, 0).tolist() for p, v in pairs.items()}
    return Measurement(statistics=statistics, n=len(src), tables={"trajectory": rows, "targeted_pgd20": [counts]},
                       figures={"trajectory": lambda path: trajectory(
                           path, rows, pair_curves, title=f"{model.label}: targeted PGD-20 feature trajectory")},
                       notes=[f"targeted PGD-20: {counts}"])


# ---------------------------------------------------------------------------------------------
# HF-3: attack success of the low- and high-frequency parts of a perturbation


def split_radii(size: int) -> list[int]:
    """The radii HF-3 checks: integers from 1/8 to 3/8 of the image side (28 px: 4..10)."""
    return list(range(math.ceil(SPLIT_RANGE[0] * size), math.floor(SPLIT_RANGE[1] * size) + 1))


def frequency_split_success(model: TrainedModel, tset: TargetedSet, *, margin: float = 0.2,
                            batch_size: int = 500) -> Measurement:
    """HF-3: success (classified as the target) of x + low_pass(delta, r) and x + high_pass(delta, r),
    clipped to [0, 1], over successful targeted attacks, for every radius r; checked: the high part's
    success exceeds the low part's by more than ``margin`` at every radius of ``split_radii``."""
    keep, counts = _succeeded(model, tset, batch_size)
    dev = tset.x.device
    k = keep.to(dev)
    x, delta, tgt, y = tset.x[k], (tset.x_adv - tset.x)[k], tset.target[k], tset.y[k]
    h, w = x.shape[-2:]
    checked = split_radii(min(h, w))
    power = frequency.spectrum(delta).abs().square().sum(1)                   # (n, H, W), channels summed
    dist = frequency.radial_distance(h, w, power.device)
    success, fooled = {"low": {}, "high": {}}, {"low": {}, "high": {}}
    for r in range(frequency.full_radius(h, w) + 1):
        for part, filt in (("low", frequency.low_pass), ("high", frequency.high_pass)):
            pred = predict(model.module, (x + filt(delta, r)).clamp(0, 1), batch_size=batch_size)
            success[part][r] = (pred == tgt).float().cpu().numpy()
            fooled[part][r] = (pred != y).float().cpu().numpy()
    samples = [success["high"][r] for r in checked] + [success["low"][r] for r in checked]

    def worst_gap(*s, axis=-1):
        hi, lo = np.stack(s[: len(checked)]), np.stack(s[len(checked):])
        return (hi.mean(axis) - lo.mean(axis)).min(0)

    statistic = stats.bootstrap(worst_gap, *samples)
    rows = []
    for r in success["low"]:
        est_lo, est_hi = (stats.mean(success[p][r]) for p in ("low", "high"))
        low_energy = (power[:, dist <= r].sum(1) / power.flatten(1).sum(1).clamp_min(1e-20)).mean()
        rows.append({"radius": r, "checked": r in checked, "energy_low": float(low_energy), "success_low": est_lo.value,
                     "success_low_ci": [est_lo.low, est_lo.high], "success_high": est_hi.value,
                     "success_high_ci": [est_hi.low, est_hi.high], "fooled_low": float(fooled["low"][r].mean()),
                     "fooled_high": float(fooled["high"][r].mean())})
    return Measurement(statistics={"min_success_high_minus_low": statistic}, n=int(keep.sum()),
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


def target_spectrum_correlation(model: TrainedModel, tset: TargetedSet, *, num_classes: int,
                                radius: float | None = None, confidence: float = 0.98,
                                batch_size: int = 500) -> Measurement:
    """HF-4: how often the target class's mean high-frequency spectrum is the one a successful targeted
    perturbation correlates with best, against chance 1/K. The interval is at ``confidence`` 0.98, so
    that its lower bound above chance is the one-sided p < 0.01 of claims.md (exact binomial test beside it)."""
    keep, counts = _succeeded(model, tset, batch_size)
    h = tset.x.shape[-1]
    radius = HIGH_BAND_FRACTION * h if radius is None else radius
    k = keep.to(tset.x.device)
    delta, src, tgt = (tset.x_adv - tset.x)[k], tset.y.cpu()[keep], tset.target.cpu()[keep]
    corr = spectrum_correlations(delta, tset.x, tset.y, num_classes, radius).cpu()
    first = corr.argmax(1)
    target_first = (first == tgt).double().numpy()
    chance = 1 / num_classes
    est = stats.mean(target_first, confidence=confidence)
    lift = est.shifted(chance)
    matrix = np.stack([corr[tgt == t].mean(0).numpy() if (tgt == t).any() else np.full(num_classes, np.nan)
                       for t in range(num_classes)])
    rank_of_target = (corr > corr[torch.arange(len(tgt)), tgt][:, None]).sum(1) + 1
    others = corr.clone()
    others[torch.arange(len(src)), src] = -math.inf                            # rank among the non-source classes
    summary = {"target_first_rate": est.value, "chance": chance,
               "source_first_rate": float((first == src).double().mean()),
               "target_first_among_non_source": float((others.argmax(1) == tgt).double().mean()),
               "chance_among_non_source": 1 / (num_classes - 1),
               "mean_rank_of_target": float(rank_of_target.double().mean()), "radius": float(radius), **counts}
    rows = [{"target": t, "perturbations": int((tgt == t).sum()),
             "target_first_rate": float((first[tgt == t] == t).double().mean()) if (tgt == t).any() else None,
             "correlations": [round(float(v), 4) for v in matrix[t]]} for t in range(num_classes)]
    return Measurement(
        statistics={"target_first_rate_minus_chance": lift}, n=len(tgt),
        tables={"summary": [summary], "by_target": rows},
        tests={"binomial": stats.binomial(int(target_first.sum()), len(target_first), chance)},
        figures={"correlation_matrix": lambda path: correlation_matrix(
            path, matrix, title=f"{model.label}: high-band spectrum of delta (row: target) vs class mean (column)")},
        notes=[f"high band: radius > {radius:g} px; targeted PGD-20: {counts}"])
