"""Frequency claims of "Dissecting local properties of adversarial examples" (LP-1 .. LP-5).

Accuracy curves over the filtering radius (Fig. 1, Fig. 6) are per-image 0/1 matrices (images x
radii), so every statistic of a curve (its peak, its fall, its rank correlation with the radius)
gets a bootstrap interval by resampling images and recomputing the curve. Radii run over every
integer from 1 to the full spectrum (``frequency.full_radius``), as in claims.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import stats
from ..evaluation import correct
from ..measurement import Measurement
from ..pipeline import AdversarialSet, TrainedModel
from . import frequency as F
from . import local_properties_figures as lpfig
from .local_properties import bootstrap_images, same_images, spearman_rho

INNER_BAND = 0.25  # LP-4: the inner (low-frequency) disc has radius INNER_BAND * image side (half of Nyquist)


def radii_of(x: torch.Tensor) -> list[int]:
    """Every integer radius from 1 to the one that keeps the whole spectrum."""
    return list(range(1, F.full_radius(x.shape[-2], x.shape[-1]) + 1))


def correctness_curve(model: torch.nn.Module, y: torch.Tensor, radii: list[int],
                      images: Callable[[slice, int], torch.Tensor], *, batch_size: int = 500) -> np.ndarray:
    """(images, radii) 0/1 matrix: is ``model`` right on ``images(batch, r)`` at every radius r."""
    out = np.zeros((len(y), len(radii)))
    for i in range(0, len(y), batch_size):
        part = slice(i, i + batch_size)
        for k, r in enumerate(radii):
            out[part, k] = correct(model, images(part, r), y[part]).cpu().numpy()
    return out


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
    return spearman_rho(radii, curve.mean(0))


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


def low_pass_accuracy(std: TrainedModel, std_set: AdversarialSet) -> Measurement:
    """LP-1: on STD, accuracy of low-passed adversarial images peaks at an intermediate radius and
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


def low_pass_accuracy_std_vs_adv(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                                 adv_set: AdversarialSet) -> Measurement:
    """LP-2: the fall of low-passed adversarial accuracy from its peak is far smaller on ADV than on STD."""
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


def frequency_swap(std: TrainedModel, std_set: AdversarialSet, *, adv: TrainedModel | None = None,
                   adv_set: AdversarialSet | None = None) -> Measurement:
    """LP-3: on STD, "nat low + adv high" accuracy rises with the threshold radius and "adv low +
    nat high" falls; Spearman rho of accuracy against radius, bootstrap over images. ADV's curves
    (Fig. 1d), when given, are drawn but not checked (claims.md checks STD)."""
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


def spectrum_differences(std_set: AdversarialSet, adv_set: AdversarialSet) -> Measurement:
    """LP-4: the mean log-amplitude difference adv - nat lies in the outer (high-frequency) band, and
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


def high_pass_accuracy(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                       adv_set: AdversarialSet) -> Measurement:
    """LP-5: accuracy above chance, averaged over every radius, of high-passed natural and adversarial
    images on STD and ADV (per image: mean correctness over radii; bootstrap over images)."""
    same_images(std_set, adv_set)
    radii = radii_of(std_set.x)
    with torch.no_grad():
        classes = std.module(std_set.x[:1]).shape[1]
    chance = 1.0 / classes
    curves = {std.label: high_pass_curves(std, std_set, radii), adv.label: high_pass_curves(adv, adv_set, radii)}
    statistics = {}
    for tag, label in (("std", std.label), ("adv", adv.label)):
        for kind in ("nat", "adv"):
            statistics[f"{tag}_{kind}_above_chance"] = stats.mean(curves[label][kind].mean(1) - chance)
    rows = {label: _curve_rows(radii, c) for label, c in curves.items()}
    return Measurement(
        statistics=statistics, n=len(std_set.y), values={"chance": chance},
        tables={f"fig6_{label}": r for label, r in rows.items()},
        figures={"fig6": lambda path: lpfig.curves(
            path, radii, rows, names={"nat": "natural", "adv": "adversarial (PGD-20)"}, chance=chance,
            xlabel="high-pass radius", title="Fig. 6: high-pass filtered images")},
    )
