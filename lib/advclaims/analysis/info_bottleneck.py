"""Analyses of "Distilling robust and non-robust features in adversarial examples by information
bottleneck" (Kim, Lee & Ro, NeurIPS 2021): claims IB-1 .. IB-6.

Each analysis takes an ``EvaluationSuite`` (one adversarially trained model, its test images, its
channel masks and its attacks; see info_bottleneck_suite) and returns one Measurement whose
statistics carry 95% bootstrap intervals over test images. The bottleneck itself (split point,
fitting, thresholding, Z̄) is documented in info_bottleneck_features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy import stats as sps

from .. import stats
from ..evaluation import correct
from ..measurement import Measurement
from . import figures
from .info_bottleneck_features import (ChannelMasks, fit_channel_masks, masked_predictions, predictions_of_channels,
                                       random_channel_masks)
from .info_bottleneck_suite import THREAT_MODEL, EvaluationSuite

ATTACK_LABELS = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "cw": "CW", "nrf": "NRF (L2, paper)",
                 "nrf_linf": "NRF (L-inf eps)", "nrf_min": "||G_nr|| min", "rf_max": "||G_r|| max",
                 "rf_min": "||G_r|| min"}
TABLE1_ATTACKS = ("fgsm", "pgd", "cw")          # Tables 1 and 2, in order of strength
BETAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # Fig. 5's sweep spans beta = 5 (where the paper sees a reversal)
CONTROL_DRAWS = 20  # IB-3: random channel selections per image in the equal-size control
BEYOND_EPS_TOL = 1e-6  # float rounding of a confined attack's box edge, in pixels
ARCH_NAMES = {"vgg16_bn": "VGG-16", "wrn28_10": "WRN-28-10"}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _row(**cells) -> dict:
    """A table row; Estimates become value plus a `<name>_ci` interval column."""
    row = {}
    for k, v in cells.items():
        if isinstance(v, stats.Estimate):
            row[k], row[f"{k}_ci"] = v.value, [v.low, v.high]
        else:
            row[k] = v
    return row


def _notes(suite: EvaluationSuite) -> list[str]:
    return [f"model: {suite.model.label} ({ARCH_NAMES.get(suite.arch, suite.arch)}, width {suite.model.spec['width']}), "
            f"bottleneck at {suite.split.layer}"]


def _perturbations(s, successful: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Per image: L2 and L-inf norms of x_adv - x; ``successful`` (bool) marks the attack's successes (a clean
    image the model gets right, misclassified after the attack). Norms are read over those only: C&W and NRF
    return x where they fail, and an image misclassified already needs no perturbation, so a mean over all
    images counts either as a perturbation of size 0. ``beyond_eps``: which successes exceed eps in L-inf."""
    delta = (s.x_adv - s.x).flatten(1)
    l2, linf = _np(delta.norm(dim=1)), _np(delta.abs().amax(dim=1))
    return {"l2": l2, "linf": linf, "successful": successful, "beyond_eps": linf[successful] > eps + BEYOND_EPS_TOL}


def _mean_of(values: np.ndarray):
    """The mean with its interval where there are 2 or more values; the plain mean (or None) otherwise."""
    if len(values) >= 2:
        return stats.mean(values)
    return float(values.mean()) if len(values) else None


# ---------------------------------------------------------------------------------------------
# IB-1


def robust_and_non_robust_split(suite: EvaluationSuite, *, fit: Callable[..., ChannelMasks] = fit_channel_masks
                                ) -> Measurement:
    """IB-1 (Section 2.2, Eq. 5): the masks that split Z into Z_r and Z_nr, on the clean test images.

    Fits the bottleneck twice more with the suite's seed (features recomputed each time) and counts, per
    image, the channels whose assignment differs among the two fits and the masks the other claims use
    (the store's): 0 when the fit is deterministic. And the fraction of images whose masks hold both parts
    (at least one robust and one non-robust channel): an image with an empty part is not split at all.
    Z = Z_r + Z_nr and the partition hold by construction (i_nr = 1 - i_r); tests/test_info_bottleneck.py
    checks them on fitted masks. ``fit`` stands in for fit_channel_masks (tests feed a nondeterministic one).
    """
    used = suite.masks("clean")
    fits = [fit(suite.split, suite.features(suite.x), suite.y, seed=suite.seed).robust.to(used.robust.device)
            for _ in range(2)]
    agree = (fits[0] == used.robust) & (fits[1] == used.robust)
    changed = _np((~agree).sum(1))
    other = fit(suite.split, suite.features(suite.x), suite.y, seed=suite.seed + 1).robust.to(used.robust.device)
    changed_other_seed = _np((other != used.robust).sum(1))
    channels = used.robust.shape[1]
    robust = _np(used.robust.sum(1))
    both = ((robust > 0) & (robust < channels)).astype(float)
    est = {"rerun_mask_changes": stats.exact(float(changed.mean()), len(changed)),
           "images_split_in_two": stats.mean(both)}
    other_est = stats.exact(float(changed_other_seed.mean()), len(changed_other_seed))
    rows = [_row(quantity="channels per image changed on a rerun, same seed (2 fits and the stored masks)",
                 mean=est["rerun_mask_changes"]),
            _row(quantity="channels per image changed with another seed (shown only)", mean=other_est),
            _row(quantity=f"robust channels per image (of {channels})", mean=stats.mean(robust),
                 min=float(robust.min()), max=float(robust.max())),
            _row(quantity="images with no robust channel", mean=stats.mean((robust == 0).astype(float))),
            _row(quantity="images with no non-robust channel", mean=stats.mean((robust == channels).astype(float))),
            _row(quantity="images split in two (both parts non-empty)", mean=est["images_split_in_two"])]
    return Measurement(
        statistics=est, n=len(suite.y),
        values={"robust_channels": float(robust.mean()), "channels": float(channels),
                "other_seed_mask_changes": other_est.value, "images_without_robust_channels": float((robust == 0).mean())},
        tables={"decomposition": rows}, notes=_notes(suite))


# ---------------------------------------------------------------------------------------------
# IB-2 (Table 1)


def _masked_correct(suite: EvaluationSuite, x: torch.Tensor, masks) -> dict[str, np.ndarray]:
    preds = masked_predictions(suite.split, suite.features(x), masks)
    return {k: _np(v == suite.y) for k, v in preds.items()}


def robust_features_under_attacks(suite: EvaluationSuite, attacks: tuple[str, ...] = TABLE1_ATTACKS) -> Measurement:
    """IB-2: accuracy of tail(Z̄), tail(i_r · Z̄) and tail(i_nr · Z̄), masks fitted on the clean images,
    for clean images and each attack (Table 1). Robust beats non-robust under every attack; the
    non-robust accuracy falls from FGSM to PGD to CW."""
    masks = suite.masks("clean")
    ok = {"clean": _masked_correct(suite, suite.x, masks)}
    for a in attacks:
        ok[a] = _masked_correct(suite, suite.attack(a).x_adv, masks)
    statistics = {f"robust_minus_non_robust_{a}": stats.mean_difference(ok[a]["robust"], ok[a]["non_robust"])
                  for a in attacks}
    for stronger, weaker in zip(attacks[1:], attacks[:-1]):
        statistics[f"non_robust_{weaker}_minus_{stronger}"] = stats.mean_difference(
            ok[weaker]["non_robust"], ok[stronger]["non_robust"])
    rows, acc = [], {}
    for name, o in ok.items():
        acc[name] = {k: stats.mean(v) for k, v in o.items()}
        rows.append(_row(example="Clean" if name == "clean" else ATTACK_LABELS[name], int_acc=acc[name]["int"],
                         robust_acc=acc[name]["robust"], non_robust_acc=acc[name]["non_robust"]))
    values = {f"{k}_acc_{name}": e.value for name, a in acc.items() for k, e in a.items()}
    values["robust_channels"] = float(masks.robust.sum(1).float().mean())

    def draw(path: Path) -> None:
        _grouped_bars(path, acc, labels={"int": "Int.", "robust": "R.", "non_robust": "NR."},
                      title=f"{suite.model.label}: accuracy of Z̄, i_r·Z̄, i_nr·Z̄ (clean masks; 95% CI)")

    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"table1": rows},
                       figures={f"table1_{suite.arch}": draw}, notes=_notes(suite))


# ---------------------------------------------------------------------------------------------
# IB-3 (Table 2)


def non_robust_features_carry_the_adversarial_label(suite: EvaluationSuite,
                                                    attacks: tuple[str, ...] = TABLE1_ATTACKS,
                                                    *, control_draws: int = CONTROL_DRAWS) -> Measurement:
    """IB-3 (Section 3.3, Table 2): on successful attacks (model(x_adv) != y), masks fitted on the adversarial
    images; agreement of tail(i_nr^a · Z̄) with the adversarial prediction, against chance, against
    tail(i_r^a · Z̄)'s agreement, and against a control of the same size: per image, ``control_draws``
    random channel selections with as many channels as its non-robust mask (seeded by the suite's seed),
    their agreement averaged. The non-robust part holds most channels, so chance alone is a weak reference:
    the control asks whether the bottleneck's choice of channels matters, not only their number."""
    chance = 1.0 / suite.num_classes
    statistics, rows, values = {}, [], {}
    for a in attacks:
        s = suite.attack(a)
        z_adv = suite.features(s.x_adv)
        masks = suite.masks(a)
        preds = masked_predictions(suite.split, z_adv, masks)
        success = preds["int"] != suite.y
        n = int(success.sum())
        if n < 2:
            raise stats.Unmeasurable(f"IB-3: only {n} successful {a} examples on {suite.model.label}; the agreement needs "
                             "at least 2 (a stronger attack budget or more test images)")
        adv_label = preds["int"][success]
        agree_nr = _np(preds["non_robust"][success] == adv_label)
        agree_r = _np(preds["robust"][success] == adv_label)
        sizes = masks.non_robust[success].sum(1)
        control = random_channel_masks(sizes, masks.robust.shape[1], draws=control_draws, seed=suite.seed)
        agree_random = np.mean([_np(predictions_of_channels(suite.split, z_adv[success], keep.to(z_adv.device))
                                    == adv_label) for keep in control], axis=0)
        nr, r, rnd = stats.mean(agree_nr), stats.mean(agree_r), stats.mean(agree_random)
        statistics[f"non_robust_agreement_minus_chance_{a}"] = nr.shifted(chance)
        statistics[f"non_robust_minus_random_agreement_{a}"] = stats.mean_difference(agree_nr, agree_random)
        statistics[f"non_robust_minus_robust_agreement_{a}"] = stats.mean_difference(agree_nr, agree_r)
        values[f"non_robust_agreement_{a}"] = nr.value
        values[f"random_agreement_{a}"] = rnd.value
        rows.append(_row(attack=ATTACK_LABELS[a], successful=n, non_robust_agreement=nr, random_agreement=rnd,
                         robust_agreement=r, chance=chance, non_robust_channels=float(sizes.float().mean()),
                         robust_channels=float(masks.robust[success].sum(1).float().mean())))
    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"table2": rows},
                       notes=_notes(suite) + [f"control: {control_draws} random channel selections per image, each as "
                                              f"large as its non-robust mask (seed {suite.seed})"])


# ---------------------------------------------------------------------------------------------
# IB-4 (Fig. 5)


def _spearman_of_means(*samples, axis=-1):
    """Spearman rho between beta's order and the mean of each sample (vectorised for the bootstrap)."""
    means = np.stack([np.mean(s, axis=axis) for s in samples], axis=-1)
    ranks = sps.rankdata(means, axis=-1)
    order = np.arange(len(samples), dtype=float)
    rc, oc = ranks - ranks.mean(axis=-1, keepdims=True), order - order.mean()
    denominator = np.sqrt((rc ** 2).sum(axis=-1) * (oc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rc * oc).sum(axis=-1) / denominator
    return np.where(denominator > 0, rho, 0.0)  # constant means: no trend


def robust_channels_versus_beta(suite: EvaluationSuite, betas: tuple[float, ...] = BETAS) -> Measurement:
    """IB-4: masks fitted on the clean images for each beta; robust channels per image and the
    accuracies of the robust and non-robust features (clean, and PGD with the clean masks) (Fig. 5)."""
    if len(betas) < 3 or list(betas) != sorted(betas):
        raise ValueError("IB-4 needs at least 3 increasing beta values")
    z_clean, z_pgd = suite.features(suite.x), suite.features(suite.attack("pgd").x_adv)
    counts, rows = [], []
    channels = z_clean.shape[1]
    for beta in betas:
        masks = suite.masks("clean", beta=beta)
        count = _np(masks.robust.sum(1))
        counts.append(count)
        clean = masked_predictions(suite.split, z_clean, masks)
        adv = masked_predictions(suite.split, z_pgd, masks)
        rows.append(_row(beta=beta, robust_channels=stats.mean(count), non_robust_channels=channels - float(count.mean()),
                         robust_acc_clean=stats.mean(_np(clean["robust"] == suite.y)),
                         non_robust_acc_clean=stats.mean(_np(clean["non_robust"] == suite.y)),
                         robust_acc_pgd=stats.mean(_np(adv["robust"] == suite.y)),
                         non_robust_acc_pgd=stats.mean(_np(adv["non_robust"] == suite.y))))
    statistics = {"robust_channels_spearman": stats.bootstrap(_spearman_of_means, *counts),
                  "robust_channels_first_minus_last": stats.mean_difference(counts[0], counts[-1])}
    values = {f"robust_channels_beta_{b:g}": float(c.mean()) for b, c in zip(betas, counts)}

    def draw(path: Path) -> None:
        _beta_sweep(path, rows, channels, title=f"{suite.model.label}: robust / non-robust features vs beta")

    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"fig5": rows},
                       figures={f"fig5_{suite.arch}": draw}, notes=_notes(suite))


# ---------------------------------------------------------------------------------------------
# IB-5 (Table 3) and IB-6 (Table 4)


def _attack_table(suite: EvaluationSuite, names: tuple[str, ...], *, build_order: tuple[str, ...] = ()):
    """Accuracy and perturbation norms per attack; ``build_order`` says which sets to build first, so that two
    claims sharing a set (IB-5 and IB-6 share NRF) build it once without waiting on each other. Norms are
    over the attack's successes (clean right, adversarial wrong), beside their share of the images and the
    fraction of them beyond the L-inf eps of FGSM/BIM/PGD."""
    for name in build_order:
        suite.attack(name)
    ok, norms, rows = {}, {}, []
    clean = _np(correct(suite.model.module, suite.x, suite.y))
    rows.append(_row(attack="Clean", threat_model="–", accuracy=stats.mean(clean), successful=0.0, l2=0.0, linf=0.0,
                     beyond_eps=0.0, steps=0))
    for name in names:
        s = suite.attack(name)
        ok[name] = _np(correct(suite.model.module, s.x_adv, suite.y))
        p = norms[name] = _perturbations(s, (clean == 1) & (ok[name] == 0), suite.eps)
        won = p["successful"]
        rows.append(_row(attack=ATTACK_LABELS[name], threat_model=THREAT_MODEL[name], accuracy=stats.mean(ok[name]),
                         successful=float(won.mean()), l2=_mean_of(p["l2"][won]), linf=_mean_of(p["linf"][won]),
                         beyond_eps=float(p["beyond_eps"].mean()) if won.any() else None,
                         steps=s.params.get("steps", 1)))
    return clean, ok, norms, rows


def _norm_values(norms: dict) -> dict[str, float]:
    """Point values per attack: its successes' share of the images, their mean L2 and L-inf norms, and the
    fraction of them beyond eps in L-inf."""
    values = {}
    for name, p in norms.items():
        won = p["successful"]
        values[f"{name}_successful_fraction"] = float(won.mean())
        if won.any():
            values[f"{name}_l2_of_successful"] = float(p["l2"][won].mean())
            values[f"{name}_linf_of_successful"] = float(p["linf"][won].mean())
            values[f"{name}_beyond_eps_fraction"] = float(p["beyond_eps"].mean())
    return values


def nrf_versus_standard_attacks(suite: EvaluationSuite) -> Measurement:
    """IB-5 (Section 4, Table 3): accuracy under FGSM, BIM, PGD, CW and NRF (as in the paper: unbounded L2;
    and confined to the L-inf eps-ball), each beside its perturbation norms over its successes and the
    fraction of those beyond eps in L-inf, so that NRF's unequal threat model stays visible.
    Statistics are accuracy differences (other attack minus NRF), paired over test images."""
    names = ("fgsm", "bim", "pgd", "cw", "nrf", "nrf_linf")
    clean, ok, norms, rows = _attack_table(suite, names, build_order=("nrf", "nrf_linf"))
    statistics = {"cw_minus_nrf": stats.mean_difference(ok["cw"], ok["nrf"])}
    for a in ("fgsm", "bim", "pgd"):
        statistics[f"{a}_minus_nrf_linf"] = stats.mean_difference(ok[a], ok["nrf_linf"])
    for a in ("fgsm", "bim", "pgd"):
        statistics[f"{a}_minus_nrf"] = stats.mean_difference(ok[a], ok["nrf"])
    values = {f"{n}_accuracy": float(v.mean()) for n, v in ok.items()}
    values.update(_norm_values(norms))
    values[f"{suite.arch}_clean_accuracy"] = float(clean.mean())

    def draw(path: Path) -> None:
        _accuracy_and_norms(path, rows, eps=suite.eps,
                            title=f"{suite.model.label}: accuracy and perturbation size per attack")

    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"table3": rows},
                       figures={f"table3_{suite.arch}": draw}, notes=_notes(suite))


def gradient_norm_ablation(suite: EvaluationSuite) -> Measurement:
    """IB-6: the NRF objective with the non-robust or the robust channel mask, its gradient norm
    maximised or minimised (Table 4). Statistics: accuracy under each variant minus accuracy under
    maximised ||G_nr|| (NRF), paired over test images."""
    names = ("nrf", "nrf_min", "rf_max", "rf_min")
    clean, ok, norms, rows = _attack_table(suite, names, build_order=("nrf_min", "rf_max", "rf_min"))
    statistics = {f"{n}_minus_nrf": stats.mean_difference(ok[n], ok["nrf"]) for n in names[1:]}
    values = {f"{n}_accuracy": float(v.mean()) for n, v in ok.items()}
    values.update(_norm_values(norms))

    def draw(path: Path) -> None:
        _accuracy_and_norms(path, rows, eps=suite.eps, title=f"{suite.model.label}: gradient-norm ablation (Table 4)")

    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"table4": rows},
                       figures={f"table4_{suite.arch}": draw}, notes=_notes(suite))


# ---------------------------------------------------------------------------------------------
# figures


def _grouped_bars(path: Path, acc: dict, *, labels: dict, title: str) -> None:
    fig, ax = figures.plt.subplots(figsize=(6, 3.4))
    groups = list(acc)
    width = 0.8 / len(labels)
    for j, (key, label) in enumerate(labels.items()):
        est = [acc[g][key] for g in groups]
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [e.value for e in est], width=width, label=label,
               yerr=[[e.value - e.low for e in est], [e.high - e.value for e in est]], capsize=3)
    ax.set_xticks(range(len(groups)), ["Clean" if g == "clean" else ATTACK_LABELS[g] for g in groups])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    figures.save(fig, path)


def _beta_sweep(path: Path, rows: list[dict], channels: int, *, title: str) -> None:
    """Fig. 5: (a) accuracy of robust / non-robust features vs beta, (b) channels assigned."""
    fig, (ax1, ax2) = figures.plt.subplots(1, 2, figsize=(9, 3.4))
    betas = [r["beta"] for r in rows]
    for key, label, style in (("robust_acc_clean", "R. clean", "-o"), ("non_robust_acc_clean", "NR. clean", "-s"),
                              ("robust_acc_pgd", "R. PGD", "--o"), ("non_robust_acc_pgd", "NR. PGD", "--s")):
        lo = [r[key] - r[f"{key}_ci"][0] for r in rows]
        hi = [r[f"{key}_ci"][1] - r[key] for r in rows]
        ax1.errorbar(betas, [r[key] for r in rows], yerr=[lo, hi], fmt=style, capsize=3, label=label)
    ax1.set_xscale("log")
    ax1.set_ylim(0, 1)
    ax1.set_xlabel("beta")
    ax1.set_ylabel("accuracy")
    ax1.set_title("(a) accuracy of the distilled features (Fig. 5a-b)", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.plot(betas, [r["robust_channels"] for r in rows], "-o", label="robust")
    ax2.plot(betas, [r["non_robust_channels"] for r in rows], "-s", label="non-robust")
    ax2.axhline(channels, color="grey", lw=0.8, ls=":")
    ax2.set_xscale("log")
    ax2.set_xlabel("beta")
    ax2.set_ylabel(f"channels per image (of {channels})")
    ax2.set_title("(b) number of assigned channels (Fig. 5c)", fontsize=9)
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    figures.save(fig, path)


def _accuracy_and_norms(path: Path, rows: list[dict], *, eps: float, title: str) -> None:
    """Accuracy per attack (95% CI) beside its mean L2 and L-inf norms over its successes, eps marked."""
    fig, axes = figures.plt.subplots(1, 3, figsize=(11, 3.4))
    names = [r["attack"] for r in rows]
    labels = ("accuracy", "mean L2 norm (successful attacks)", "mean L-inf norm (successful attacks)")
    for ax, key, label in zip(axes, ("accuracy", "l2", "linf"), labels):
        vals = [np.nan if r[key] is None else r[key] for r in rows]
        err = [[v - r.get(f"{key}_ci", [v] * 2)[0] for v, r in zip(vals, rows)],
               [r.get(f"{key}_ci", [v] * 2)[1] - v for v, r in zip(vals, rows)]]
        ax.bar(range(len(rows)), vals, yerr=err, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(rows)), names, rotation=40, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[2].axhline(eps, color="grey", lw=0.8, ls=":", label=f"eps {eps:g}")
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    figures.save(fig, path)
