"""Frequency claims of "Dissecting local properties of adversarial examples" (LP-1 .. LP-5).

Accuracy curves over the filtering radius (Fig. 1, Fig. 6) are per-image 0/1 matrices (images x
radii), so every statistic of a curve (its peak, its fall, its rank correlation with the radius)
gets a bootstrap interval by resampling images and recomputing the curve. Radii run over every
integer from 1 to the full spectrum (``frequency.full_radius``), as in docs/claims.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from advclaims.verdict import stats
from advclaims.evaluation import predict
from advclaims.verdict.measurement import Measurement, measures
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel
from advclaims.analysis import frequency as F
from advclaims.analysis.local_properties import figures as lpfig
from advclaims.analysis.local_properties.layers import bootstrap_images, same_images

INNER_BAND = 0.25  # LP-4: the inner (low-frequency) disc has radius INNER_BAND * image side (half of Nyquist)


def radii_of(x: torch.Tensor) -> list[int]:
    """Every integer radius from 1 to the one that keeps the whole spectrum."""
    return list(range(1, F.full_radius(x.shape[-2], x.shape[-1]) + 1))


FORWARD_IMAGES = 2000  # images per forward pass: several radii share one, which is about twice as fast on a CPU


def predictions_over_radii(model: torch.nn.Module, n: int, radii: list[int],
                           images: Callable[[slice, int], torch.Tensor], *, batch_size: int = 500) -> np.ndarray:
    """(images, radii) predicted classes of ``model`` on ``images(batch, r)`` at every radius r; the
    filtered batches of several radii go through the model together."""
    out = np.zeros((n, len(radii)), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            part = slice(i, min(i + batch_size, n))
            size = part.stop - part.start
            step = max(1, FORWARD_IMAGES // size)
            for k in range(0, len(radii), step):
                chunk = radii[k:k + step]
                pred = predict(model, torch.cat([images(part, r) for r in chunk]), batch_size=FORWARD_IMAGES)
                out[part, k:k + len(chunk)] = pred.view(len(chunk), size).T.cpu().numpy()
    return out


def correctness_curve(model: torch.nn.Module, y: torch.Tensor, radii: list[int],
                      images: Callable[[slice, int], torch.Tensor], *, batch_size: int = 500) -> np.ndarray:
    """(images, radii) 0/1 matrix: is ``model`` right on ``images(batch, r)`` at every radius r."""
    pred = predictions_over_radii(model, len(y), radii, images, batch_size=batch_size)
    return (pred == y.cpu().numpy()[:, None]).astype(float)


def low_pass_curves(model: TrainedModel, s: AdversarialSet, radii: list[int], *, outside: float = 0.0) -> dict:
    m = model.module
    return {"nat": correctness_curve(m, s.y, radii, lambda p, r: F.low_pass(s.x[p], r, outside=outside)),
            "adv": correctness_curve(m, s.y, radii, lambda p, r: F.low_pass(s.x_adv[p], r, outside=outside))}


def high_pass_curves(model: TrainedModel, s: AdversarialSet, radii: list[int], *, outside: float = 0.0) -> dict:
    m = model.module
    return {"nat": correctness_curve(m, s.y, radii, lambda p, r: F.high_pass(s.x[p], r, outside=outside)),
            "adv": correctness_curve(m, s.y, radii, lambda p, r: F.high_pass(s.x_adv[p], r, outside=outside))}


def swap_curves(model: TrainedModel, s: AdversarialSet, radii: list[int], *, outside: float = 0.0) -> dict:
    m = model.module
    return {"nat_low_adv_high": correctness_curve(m, s.y, radii, lambda p, r: F.swap(s.x[p], s.x_adv[p], r, outside=outside)),
            "adv_low_nat_high": correctness_curve(m, s.y, radii, lambda p, r: F.swap(s.x_adv[p], s.x[p], r, outside=outside))}


def peak_fall(curve: np.ndarray) -> float:
    """Highest accuracy over radii minus the accuracy at the full spectrum (last radius)."""
    acc = curve.mean(0)
    return float(acc.max() - acc[-1])


def rank_trend(radii, curve: np.ndarray) -> float:
    """Spearman rho between radius and accuracy; a flat curve has no trend (0)."""
    return stats.spearman_rho(radii, curve.mean(0))


def _curve_rows(radii, curves: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for k, r in enumerate(radii):
        row = {"radius": r}
        for name, c in curves.items():
            e = stats.mean(c[:, k])
            row[name] = e.value
            row[f"{name}_ci"] = [e.low, e.high]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# LP-1, LP-2: low-pass filtered natural and adversarial images (Fig. 1a-b)


@measures("LP-1", ("adv_peak_minus_final", "nat_final_minus_first", "nat_minus_adv_first_radius"))
def low_pass_accuracy(std: TrainedModel, std_set: AdversarialSet) -> Measurement:
    """LP-1 (Fig. 1a, Section 3.1): on STD, accuracy of low-passed adversarial images peaks at an intermediate radius and
    falls at the full spectrum; low-passed natural images rise to clean accuracy."""
    radii = radii_of(std_set.x)
    c = low_pass_curves(std, std_set, radii)
    nat, adv = c["nat"], c["adv"]
    n = len(std_set.y)
    acc = adv.mean(0)
    statistics = {
        "adv_peak_minus_final": bootstrap_images(lambda i: peak_fall(adv[i]), n),
        "nat_final_minus_first": stats.mean_difference(nat[:, -1], nat[:, 0]),
        "nat_minus_adv_first_radius": stats.mean_difference(nat[:, 0], adv[:, 0]),
    }
    rows = _curve_rows(radii, {"nat": nat, "adv": adv})
    return Measurement(
        statistics=statistics, n=n,
        values={"adv_peak_accuracy": float(acc.max()), "adv_final_accuracy": float(acc[-1]),
                "adv_peak_radius": float(radii[int(acc.argmax())]), "nat_final_accuracy": float(nat.mean(0)[-1])},
        tables={"fig1a": rows},
        figures={"fig1a": lambda path: lpfig.curves(
            path, radii, {f"{std.label}": rows}, names={"nat": "natural", "adv": "adversarial (PGD-20)"},
            xlabel="low-pass radius", title="Fig. 1a: low-pass filtered images")},
    )


@measures("LP-2", ("fall_ratio_adv_over_std",))
def low_pass_accuracy_std_vs_adv(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                                 adv_set: AdversarialSet) -> Measurement:
    """LP-2 (Fig. 1b, Section 3.1): the fall of low-passed adversarial accuracy from its peak is far smaller on ADV than on STD."""
    same_images(std_set, adv_set)
    radii = radii_of(std_set.x)
    s = {"adv": correctness_curve(std.module, std_set.y, radii, lambda p, r: F.low_pass(std_set.x_adv[p], r))}
    a = low_pass_curves(adv, adv_set, radii)
    n = len(std_set.y)
    floor = 1.0 / n  # a fall below one image cannot be resolved: keeps the ratio finite

    def fall_ratio(i):
        return peak_fall(a["adv"][i]) / max(peak_fall(s["adv"][i]), floor)

    acc = a["adv"].mean(0)
    rows = {std.label: _curve_rows(radii, s), adv.label: _curve_rows(radii, a)}
    return Measurement(
        statistics={"fall_ratio_adv_over_std": bootstrap_images(fall_ratio, n)},
        n=n,
        values={"adv_peak_minus_final": peak_fall(a["adv"]), "adv_peak_accuracy": float(acc.max()), "adv_final_accuracy": float(acc[-1]),
                "adv_peak_radius": float(radii[int(acc.argmax())]),
                "std_peak_minus_final": peak_fall(s["adv"]), "adv_nat_final_accuracy": float(a["nat"].mean(0)[-1])},
        tables={"fig1b": rows[adv.label]},
        figures={"fig1ab": lambda path: lpfig.curves(
            path, radii, rows, names={"nat": "natural", "adv": "adversarial (PGD-20)"},
            xlabel="low-pass radius", title="Fig. 1b (and STD's adversarial curve of Fig. 1a)")},
    )


# ---------------------------------------------------------------------------------------------
# LP-3: frequency swap (Fig. 1c-d)


@measures("LP-3", ("rho_nat_low_adv_high", "rho_adv_low_nat_high"))
def frequency_swap(std: TrainedModel, std_set: AdversarialSet, *, adv: TrainedModel | None = None,
                   adv_set: AdversarialSet | None = None) -> Measurement:
    """LP-3 (Fig. 1c-d, Section 3.1): on STD, "nat low + adv high" accuracy rises with the threshold radius and "adv low +
    nat high" falls; Spearman rho of accuracy against radius, bootstrap over images. ADV's curves
    (Fig. 1d), when given, are drawn but not checked (docs/claims.md checks STD)."""
    radii = radii_of(std_set.x)
    s = swap_curves(std, std_set, radii)
    n = len(std_set.y)
    statistics = {
        "rho_nat_low_adv_high": bootstrap_images(lambda i: rank_trend(radii, s["nat_low_adv_high"][i]), n,
                                                 method="percentile"),
        "rho_adv_low_nat_high": bootstrap_images(lambda i: rank_trend(radii, s["adv_low_nat_high"][i]), n,
                                                 method="percentile"),
    }
    rows = {std.label: _curve_rows(radii, s)}
    values = {f"std_{k}_first": float(v.mean(0)[0]) for k, v in s.items()}
    values.update({f"std_{k}_final": float(v.mean(0)[-1]) for k, v in s.items()})
    if adv is not None and adv_set is not None:
        same_images(std_set, adv_set)
        a = swap_curves(adv, adv_set, radii)
        rows[adv.label] = _curve_rows(radii, a)
        values.update({"adv_rho_nat_low_adv_high": rank_trend(radii, a["nat_low_adv_high"]),
                       "adv_rho_adv_low_nat_high": rank_trend(radii, a["adv_low_nat_high"])})
    return Measurement(
        statistics=statistics, n=n, values=values, tables={"fig1c": rows[std.label]},
        figures={"fig1cd": lambda path: lpfig.curves(
            path, radii, rows, names={"nat_low_adv_high": "nat low + adv high", "adv_low_nat_high": "adv low + nat high"},
            xlabel="swap threshold radius", title="Fig. 1c-d: frequency-swapped images")},
    )


# ---------------------------------------------------------------------------------------------
# LP-4: log-amplitude spectra (Fig. 2)


def log_amplitude_difference(s: AdversarialSet) -> torch.Tensor:
    """Per image: log|F(x_adv)| - log|F(x)|, averaged over channels -> (N, H, W)."""
    return (F.log_amplitude(s.x_adv) - F.log_amplitude(s.x)).mean(1)


@measures("LP-4", ("std_outer_minus_inner", "std_minus_adv_outer", "std_outer", "adv_outer"))
def spectrum_differences(std_set: AdversarialSet, adv_set: AdversarialSet) -> Measurement:
    """LP-4 (Fig. 2, Section 3.1): the mean log-amplitude difference adv - nat lies in the outer (high-frequency) band, and
    is larger for perturbations made on STD than on ADV; per-image band means, paired bootstrap."""
    same_images(std_set, adv_set)
    h, w = std_set.x.shape[-2:]
    radius = INNER_BAND * min(h, w)
    d_std, d_adv = log_amplitude_difference(std_set), log_amplitude_difference(adv_set)
    in_std, out_std = (t.cpu().numpy() for t in F.band_means(d_std, radius))
    in_adv, out_adv = (t.cpu().numpy() for t in F.band_means(d_adv, radius))
    statistics = {
        "std_outer_minus_inner": stats.mean_difference(out_std, in_std),
        "std_minus_adv_outer": stats.mean_difference(out_std, out_adv),
        "std_outer": stats.mean(out_std),
        "adv_outer": stats.mean(out_adv),
    }
    rows = [{"model": label, "inner": stats.mean(i).value, "outer": stats.mean(o).value,
             "outer_minus_inner": stats.mean_difference(o, i).value}
            for label, i, o in ((std_set.source, in_std, out_std), (adv_set.source, in_adv, out_adv))]
    maps = {"nat": F.log_amplitude(std_set.x).mean((0, 1)).cpu().numpy(),
            f"adv ({std_set.source})": F.log_amplitude(std_set.x_adv).mean((0, 1)).cpu().numpy(),
            f"adv - nat ({std_set.source})": d_std.mean(0).cpu().numpy(),
            f"adv ({adv_set.source})": F.log_amplitude(adv_set.x_adv).mean((0, 1)).cpu().numpy(),
            f"adv - nat ({adv_set.source})": d_adv.mean(0).cpu().numpy()}
    return Measurement(
        statistics=statistics, n=len(std_set.y),
        values={"std_inner": float(in_std.mean()), "adv_inner": float(in_adv.mean()),
                "adv_outer_minus_inner": float(out_adv.mean() - in_adv.mean()), "inner_radius": float(radius)},
        tables={"fig2_bands": rows},
        figures={"fig2": lambda path: lpfig.spectra(path, maps, radius=radius,
                                                    title=f"Fig. 2: mean log-amplitude spectra over {len(std_set.y)} images")},
    )


# ---------------------------------------------------------------------------------------------
# LP-5: high-pass filtered images (Fig. 6)

# The range of scales LP-5 averages over: high-pass radii 1 .. fraction x image side (at least 2 radii).
# Default a quarter of the side (7 for 28x28, 8 for 32x32): the radii that remove part of LP-4's inner
# (low-frequency) band; beyond it the high-passed image keeps only the outer band, and at the largest radii
# only a few corner coefficients, on which every model predicts one class.
HIGH_PASS_RANGES = (0.1, 0.25, 0.5, 0.75)
HIGH_PASS_RANGE = 0.25
HIGH_PASS_PARAMETER = "high_pass_range"  # LP-5's sensitivity parameter in expected/
HIGH_PASS_SETS = tuple(f"{tag}_{kind}" for tag in ("std", "adv") for kind in ("nat", "adv"))  # model _ images
HIGH_PASS_STATISTICS = tuple(f"{key}_above_chance" for key in HIGH_PASS_SETS)


def high_pass_radii(x: torch.Tensor, fraction: float) -> list[int]:
    """High-pass radii 1 .. floor(fraction x image side), at least 2, at most the full spectrum's."""
    full = F.full_radius(x.shape[-2], x.shape[-1])
    return list(range(1, min(full, max(2, int(fraction * min(x.shape[-2:])))) + 1))


def accuracy_above_chance(pred: np.ndarray, y: np.ndarray, classes: int) -> Callable[[np.ndarray], float]:
    """Statistic of resampled image indices: accuracy minus chance agreement, averaged over the radii
    (columns of ``pred``). Chance agreement at a radius is sum_c q(c) p(c), q the share of images
    predicted c there and p the share labelled c: the accuracy of predictions independent of the labels
    with the same frequencies (one class predicted everywhere: that class's share, not 1/classes)."""
    n, radii = pred.shape
    hit = (pred == y[:, None]).astype(float)                                        # (images, radii)
    onehot_pred = np.eye(classes)[pred].reshape(n, radii * classes)                 # (images, radii x classes)
    onehot_y = np.eye(classes)[y]                                                   # (images, classes)

    def statistic(i: np.ndarray) -> float:
        w = np.bincount(i, minlength=n) / len(i)  # a resample as weights on the images: one product each
        chance = (w @ onehot_pred).reshape(radii, classes) @ (w @ onehot_y)       # (radii,)
        return float((w @ hit - chance).mean())

    return statistic


@measures("LP-5", HIGH_PASS_STATISTICS, parameters=(HIGH_PASS_PARAMETER,))
def high_pass_accuracy(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                       adv_set: AdversarialSet) -> Measurement:
    """LP-5 (Fig. 6, Appendix A): accuracy of high-passed natural and adversarial images above chance agreement, averaged
    over the range of scales (high-pass radii 1 .. HIGH_PASS_RANGE x side), on STD and ADV; bootstrap
    over images, predictions and chance recomputed per resample. The other ranges of HIGH_PASS_RANGES
    go to the report's sensitivity table."""
    same_images(std_set, adv_set)
    radii = radii_of(std_set.x)
    with torch.no_grad():
        classes = std.module(std_set.x[:1]).shape[1]
    y = std_set.y.cpu().numpy()
    images = {"std_nat": std_set.x, "std_adv": std_set.x_adv, "adv_nat": adv_set.x, "adv_adv": adv_set.x_adv}
    models = {"std": std, "adv": adv}
    preds = {key: predictions_over_radii(models[key.split("_")[0]].module, len(y), radii,
                                         lambda part, r, x=images[key]: F.high_pass(x[part], r))
             for key in HIGH_PASS_SETS}
    n = len(y)

    def at(fraction: float) -> dict[str, stats.Estimate]:
        k = len(high_pass_radii(std_set.x, fraction))
        return {name: bootstrap_images(accuracy_above_chance(preds[key][:, :k], y, classes), n)
                for key, name in zip(HIGH_PASS_SETS, HIGH_PASS_STATISTICS)}

    statistics = at(HIGH_PASS_RANGE)
    sensitivity = {HIGH_PASS_PARAMETER: {f"{f:g}": at(f) for f in HIGH_PASS_RANGES if f != HIGH_PASS_RANGE}}
    curves = {std.label: {kind: (preds[f"std_{kind}"] == y[:, None]).astype(float) for kind in ("nat", "adv")},
              adv.label: {kind: (preds[f"adv_{kind}"] == y[:, None]).astype(float) for kind in ("nat", "adv")}}
    rows = {label: _curve_rows(radii, c) for label, c in curves.items()}
    label_share = np.bincount(y, minlength=classes) / n
    for (label, table), tag in zip(rows.items(), ("std", "adv")):
        for k, row in enumerate(table):
            for kind in ("nat", "adv"):
                q = np.bincount(preds[f"{tag}_{kind}"][:, k], minlength=classes) / n
                row[f"{kind}_chance"] = float(q @ label_share)
    top = len(high_pass_radii(std_set.x, HIGH_PASS_RANGE))
    return Measurement(
        statistics=statistics, n=n, sensitivity=sensitivity,
        values={"chance": 1.0 / classes, "range_max_radius": float(radii[top - 1])},
        tables={f"fig6_{label}": r for label, r in rows.items()},
        notes=[f"LP-5 averages over high-pass radii 1 .. {radii[top - 1]} ({HIGH_PASS_RANGE:g} of the image side); chance "
               f"is the agreement of predictions independent of the labels, per radius (tables: nat_chance, adv_chance)"],
        figures={"fig6": lambda path: lpfig.curves(
            path, radii, rows, names={"nat": "natural", "adv": "adversarial (PGD-20)"}, chance=1.0 / classes,
            xlabel="high-pass radius", title="Fig. 6: high-pass filtered images")},
    )
