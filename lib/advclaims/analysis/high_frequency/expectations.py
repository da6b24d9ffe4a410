"""HF-1: class-wise feature expectations are stable at each layer (our protocol: the abstract states it).

Per stage and class, the spread ratio: the RMS distance of the class's images to their class mean,
sqrt(tr Sigma_c), over the distance from that mean to the nearest other class's mean (debiased, so that
it estimates the population distance at any sample size); the worst class decides. Both are properties of
the feature distribution, so the ratio does not depend on how many images measure it (unlike the split-half
ratio, sqrt(tr Sigma_c (1/n_A + 1/n_B)) / Delta_c, which is sampling noise and falls as 1/sqrt(n): it is shown
in the table, never deciding). Measured on the whole test split for precision.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from advclaims.verdict import stats
from advclaims.verdict.measurement import Measurement, measures
from advclaims.models import RESNET_STAGES
from advclaims.checkpoints.artifacts import TrainedModel
from advclaims.analysis.high_frequency.figures import spread_ratios
from advclaims.analysis.high_frequency.targeted import LAYER_NAMES, class_means, stage_features

SMALLER_PER_CLASS = (50, 250)  # HF-1: images per class the ratio is also shown at (smoke's 500 images: ~50)


def spread_ratio_name(layer: str) -> str:
    """HF-1's statistic at one stage."""
    return f"worst_spread_ratio_{layer}"


SPREAD_RATIOS = tuple(spread_ratio_name(layer) for layer in RESNET_STAGES)  # every stage ``layers`` can name


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


def spread_ratio_statistic(features: torch.Tensor, y: torch.Tensor, num_classes: int):
    """The worst class's spread ratio sqrt(tr Sigma_c) / Delta_c as a function of resampled image indices
    (vectorised for ``stats.bootstrap``); also returns the per-class ratios.

    tr Sigma_c is the unbiased within-class trace (the mean squared distance of a class's images to their class
    mean, n/(n-1)); Delta_c^2 = min over d != c of |m_c - m_d|^2 - tr Sigma_c / n_c - tr Sigma_d / n_d, the
    plug-in squared distance less its expected excess from the means' sampling noise, so the ratio estimates the
    same population quantity at 100 images a class as at 1000 (tests/test_high_frequency.py). A resample moves
    the traces and the distances through the same linearisation as ``expected_ratio_statistic``. A squared
    distance is floored at that expected excess (what the sample can resolve): classes whose means the data
    cannot tell apart (shuffled labels, say) then get a large, finite ratio, about sqrt(n_c / 2), a lower bound.
    """
    k = num_classes
    f = features.float()
    f = f - f.mean(0)
    y = y.to(f.device)
    means = class_means(f, y, k).double()
    c_of, d_of = torch.triu_indices(k, k, 1)
    diff = means[c_of] - means[d_of]
    directions = (diff / diff.norm(dim=1, keepdim=True).clamp_min(1e-30)).float()
    projection = (f @ directions.T).double().cpu()
    spread = (f - means[y].float()).square().sum(1).double().cpu()
    y = y.cpu()
    onehot = torch.nn.functional.one_hot(y, k).double()
    members = [torch.nonzero(y == c).flatten() for c in range(k)]
    pairs = torch.arange(len(c_of))
    diagonal = torch.arange(k)

    def ratios(idx: np.ndarray) -> torch.Tensor:
        """(K, B) spread ratio of every class in each of B resamples (rows of idx)."""
        idx = torch.from_numpy(np.rint(np.atleast_2d(idx)).astype(np.int64))
        out = []
        for part in idx.split(256):
            w = torch.zeros(part.shape[0], len(y), dtype=torch.float64).scatter_add_(
                1, part, torch.ones_like(part, dtype=torch.float64))
            n_c = w @ onehot                                                    # (B, K)
            trace = (w @ (onehot * spread[:, None])) / (n_c - 1).clamp_min(1)   # (B, K) unbiased tr Sigma_c
            noise = trace / n_c.clamp_min(1)                                    # E excess of |m_c - mu_c|^2
            proj = torch.stack([w[:, m] @ projection[m] for m in members], 1) / n_c[:, :, None]  # (B, K, P)
            excess = noise[:, c_of] + noise[:, d_of]
            between = torch.maximum((proj[:, c_of, pairs] - proj[:, d_of, pairs]).square() - excess, excess)
            pairwise = torch.zeros(part.shape[0], k, k, dtype=torch.float64)
            pairwise[:, c_of, d_of] = pairwise[:, d_of, c_of] = between
            pairwise[:, diagonal, diagonal] = math.inf
            out.append((trace / pairwise.amin(-1)).sqrt().T)
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
    """Per stage: the worst class's spread ratio (``spread_ratio_statistic``, n-free: it decides) as
    ``worst_spread_ratio_{layer}`` with a percentile bootstrap CI over images (BCa's jackknife would cost one
    evaluation per image), and its table row: every class's spread ratio, their mean, and beside them the
    split-half ratios (expected over splits, and one seeded split), which measure the number of images."""
    half = split_halves(y, num_classes, seed=seed)
    index = np.arange(len(y), dtype=float)
    per_class_n = int(torch.bincount(y.cpu(), minlength=num_classes).min())
    estimates, rows = {}, []
    for layer, f in features.items():
        statistic, spread_ratios = spread_ratio_statistic(f, y, num_classes)
        # generator seed 0 on every training seed: the seeds' image resamples align (stats.pool's crossed design)
        est = stats.bootstrap(statistic, index, method="percentile", seed=0)
        spread = spread_ratios(index).flatten()
        expected = expected_ratio_statistic(f, y, num_classes)[1](index).flatten()
        one_split = one_split_ratios(f, y, half, num_classes)
        estimates[spread_ratio_name(layer)] = est
        rows.append({"layer": LAYER_NAMES.get(layer, layer), "images_per_class": per_class_n, "images": len(y),
                     "dims": f.shape[1], "worst_class": int(spread.argmax()), "worst_spread_ratio": est.value,
                     "worst_spread_ratio_ci": [est.low, est.high], "mean_spread_ratio": float(spread.mean()),
                     "per_class_spread_ratio": [round(float(r), 4) for r in spread],
                     "worst_split_half_ratio": float(expected.max()), "worst_one_split": float(one_split.max()),
                     "median_one_split_over_expected": float((one_split / expected).median())})
    return estimates, rows


@measures("HF-1", SPREAD_RATIOS)
def class_expectation_stability(model: TrainedModel, x: torch.Tensor, y: torch.Tensor, *, num_classes: int,
                                layers: tuple[str, ...] = RESNET_STAGES, seed: int = 0,
                                smaller_per_class: tuple[int, ...] = SMALLER_PER_CLASS,
                                batch_size: int = 500) -> Measurement:
    """HF-1 (abstract: "relatively stable expectations at each layer"; protocol ours): at every stage, each
    class's images lie nearer their class mean (RMS) than a bound times the distance from that mean to the nearest
    other class's mean. Per stage: the worst class's spread ratio, with a bootstrap CI over images, on ``x`` (meant
    to be the whole test split, for precision).

    The table repeats it on the first ``smaller_per_class`` images of each class, where the spread ratio should
    stay put while the split-half ratio beside it (sampling noise, the old statistic) falls as 1/sqrt(n).
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
    return Measurement(statistics=statistics, n=len(y), tables={"class_mean_stability": rows},
                       values={"images_per_class": per_class_n},
                       figures={"class_mean_stability": lambda path: spread_ratios(
                           path, rows, title=f"{model.label}: class spread over class separation per stage")},
                       notes=[f"verdict on {len(y)} test images (at least {per_class_n} a class); the table repeats "
                              f"it at {', '.join(map(str, smaller)) or 'no other'} a class, with the split-half "
                              f"ratio (shown only: it falls as 1/sqrt(images per class))"])
