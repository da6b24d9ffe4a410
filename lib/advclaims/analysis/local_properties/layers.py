"""Analyses of "Dissecting local properties of adversarial examples" (claims LP-1 .. LP-13)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from advclaims.verdict import stats
from advclaims.evaluation import correct
from advclaims.verdict.measurement import Measurement, measures
from advclaims.models import RESNET_STAGES
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel
from advclaims.analysis import figures
from advclaims.analysis.local_properties import figures as lpfig
from advclaims.analysis.responses import max_bound, response_differences, saturated_share

LAYER_NAMES = {"conv1": "Conv1", "layer0": "Layer0", "layer1": "Layer1", "layer2": "Layer2",
               "layer3": "Layer3", "layer4": "Layer4"}
KINDS = ("max", "total")           # the two response differences of a stage (Max and Total)
OWN_ATTACKS = ("pgd20", "fgsm")    # LP-10: ADV's own attacks, each set against STD's FGSM


# ---------------------------------------------------------------------------------------------
# statistic names: the analyses below build their Measurements' keys with these, and their @measures
# declarations list them over every stage a ``layers`` argument can name (RESNET_STAGES)


def ratio_name(kind: str, layer: str) -> str:
    return f"{kind}_ratio_{layer}"


def deviation_name(kind: str, layer: str) -> str:
    return f"{kind}_ratio_deviation_{layer}"


def one_sided_name(layer: str) -> str:
    return f"total_ratio_{layer}_one_sided"


def ratio_gap_name(layer: str, attack: str) -> str:
    return f"{layer}_total_ratio_gap_{attack}"


def fgsm_over_pgd20_name(layer: str, kind: str) -> str:
    return f"{layer}_{kind}_fgsm_over_pgd20"


def trend_names(layer: str) -> tuple[str, ...]:
    """LP-13's statistics when ``layer`` is the last stage read."""
    return ("kernel_magnitude_rho", f"{layer}_max_rho", f"{layer}_total_rho", "clean_robust_gap_rho")


LAYER_COMPARISON = tuple(ratio_name(kind, layer) for layer in RESNET_STAGES for kind in KINDS)  # layer_comparison
OUTCOME_COMPARISON = (tuple(name(kind, layer) for layer in RESNET_STAGES for kind in KINDS
                            for name in (ratio_name, deviation_name))
                      + tuple(one_sided_name(layer) for layer in RESNET_STAGES))             # outcome_comparison
OUTCOME_RATIOS = tuple(name for layer in RESNET_STAGES
                       for name in ([ratio_gap_name(layer, a) for a in OWN_ATTACKS]
                                    + [fgsm_over_pgd20_name(layer, kind) for kind in KINDS]))
TRANSFER_ACCURACY = ("clean_minus_transferred_accuracy", "transferred_minus_own_accuracy")
FGSM_VERSUS_PGD = ("fgsm_minus_pgd20_accuracy",)
WEIGHT_DECAY_TRENDS = tuple(dict.fromkeys(name for layer in RESNET_STAGES for name in trend_names(layer)))


SATURATED_SHARE = 0.5  # a Max with at least half its images at the ceiling measures the kernels, not the responses


def ceiling_note(layer: str, groups: dict[str, tuple[np.ndarray, float | None]]) -> str | None:
    """Why a Max statistic at ``layer`` cannot go either way, or None: ``groups`` maps a label to its
    per-image Max and that model's ceiling (``responses.max_bound``); a group whose Max reaches the
    ceiling on at least SATURATED_SHARE of its images only reports eps / std times a kernel's L1 norm."""
    hits = [f"{label}: {saturated_share(v, bound):.0%} of images at the ceiling {bound:.4g}"
            for label, (v, bound) in groups.items() if saturated_share(v, bound) >= SATURATED_SHARE]
    if not hits:
        return None
    scale = " x the stem BatchNorm's scale" if layer != "conv1" else ""
    return (f"{LAYER_NAMES.get(layer, layer)} Max saturates ({'; '.join(hits)}; ceiling = eps / std x the largest "
            f"first-layer kernel's L1 norm{scale}): it compares kernel norms, not responses")


def ceilings(model: TrainedModel, s: AdversarialSet, layers: tuple[str, ...]) -> dict[str, float | None]:
    """Per stage, the ceiling of Max under ``s``'s eps (None where none is known)."""
    return {layer: max_bound(model.module, layer, float(s.params["eps"])) for layer in layers}


def mark_saturated(statistics: dict, names: list[str], note: str | None, notes: list[str]) -> None:
    """Set ``uninformative`` on the named statistics (shown, never deciding) and say why in the notes."""
    if note is None:
        return
    for name in names:
        statistics[name] = replace(statistics[name], uninformative=note)
    notes.append(f"{', '.join(names)}: uninformative. {note}")


def layer_comparison(diffs: dict, layers: tuple[str, ...], *, bounds: dict | None = None,
                     notes: list[str] | None = None) -> tuple[dict, dict, list[dict]]:
    """Two sets of response differences on the same images, ``{"a": d_a, "b": d_b}`` (a first):
    per stage and kind (max, total), the ratio of means a/b as ``{kind}_ratio_{layer}`` (paired
    bootstrap), each mean as a value ``{name}_{kind}_{layer}``, and one table row per stage.
    ``bounds`` (name -> stage -> Max ceiling) marks a Max ratio whose either side saturates uninformative."""
    (name_a, d_a), (name_b, d_b) = diffs.items()
    statistics, values, rows = {}, {}, []
    notes = notes if notes is not None else []
    for layer in layers:
        row = {"layer": LAYER_NAMES.get(layer, layer)}
        for kind in KINDS:
            a, b = d_a[layer][kind].numpy(), d_b[layer][kind].numpy()
            ratio = stats.ratio_of_means(a, b)
            statistics[ratio_name(kind, layer)] = ratio
            if kind == "max" and bounds:
                mark_saturated(statistics, [ratio_name("max", layer)], ceiling_note(
                    layer, {name_a: (a, bounds[name_a][layer]), name_b: (b, bounds[name_b][layer])}), notes)
            for name, sample in ((name_a, a), (name_b, b)):
                m = stats.mean(sample)
                values[f"{name}_{kind}_{layer}"] = m.value
                row.update({f"{kind}_{name}": m.value, f"{kind}_{name}_ci": [m.low, m.high]})
            row.update({f"{kind}_ratio": ratio.value, f"{kind}_ratio_ci": [ratio.low, ratio.high]})
        rows.append(row)
    return statistics, values, rows


@measures("LP-7", FGSM_VERSUS_PGD)
def fgsm_versus_pgd(model: TrainedModel, *, fgsm_set: AdversarialSet, pgd_set: AdversarialSet) -> Measurement:
    """LP-7 (footnote 1 of Section 3.2 and Appendix B): accuracy under FGSM minus accuracy under PGD-20, paired
    over the same test images."""
    if not (fgsm_set.y.equal(pgd_set.y)):
        raise ValueError("FGSM and PGD sets must attack the same images")
    clean = correct(model.module, fgsm_set.x, fgsm_set.y).cpu().numpy()
    ok_fgsm = correct(model.module, fgsm_set.x_adv, fgsm_set.y).cpu().numpy()
    ok_pgd = correct(model.module, pgd_set.x_adv, pgd_set.y).cpu().numpy()
    accs = {"clean": stats.mean(clean), "FGSM": stats.mean(ok_fgsm), "PGD-20": stats.mean(ok_pgd)}
    return Measurement(
        statistics={FGSM_VERSUS_PGD[0]: stats.mean_difference(ok_fgsm, ok_pgd)},
        n=len(clean),
        values={"clean_accuracy": accs["clean"].value, "fgsm_accuracy": accs["FGSM"].value,
                "pgd20_accuracy": accs["PGD-20"].value},
        tables={"accuracy": [{"model": model.label, "attack": k, "accuracy": e.value, "low": e.low, "high": e.high}
                             for k, e in accs.items()]},
        figures={"accuracy": lambda path: figures.bars(
            path, {k: e for k, e in accs.items()}, ylabel="accuracy", ylim=(0, 1),
            title=f"{model.label}: accuracy by attack (95% CI)")},
    )


@measures("LP-8", LAYER_COMPARISON)
def response_differences_std_vs_adv(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                                    adv_set: AdversarialSet, layers: tuple[str, ...] = RESNET_STAGES,
                                    batch_size: int = 500) -> Measurement:
    """LP-8 (Table 1): Max and Total local response differences of STD and ADV per stage, each model attacked by
    its own PGD-20.

    Statistics are ratios of means STD/ADV over the same test images (paired bootstrap): scale-free,
    since the two networks' activations need not share a scale.
    """
    if not std_set.y.equal(adv_set.y):
        raise ValueError("STD and ADV sets must attack the same images")
    d_std = response_differences(std.module, std_set.x, std_set.x_adv, layers=layers, batch_size=batch_size)
    d_adv = response_differences(adv.module, adv_set.x, adv_set.x_adv, layers=layers, batch_size=batch_size)
    notes: list[str] = []
    statistics, values, rows = layer_comparison(
        {"std": d_std, "adv": d_adv}, layers, notes=notes,
        bounds={"std": ceilings(std, std_set, layers), "adv": ceilings(adv, adv_set, layers)})

    def draw(path: Path) -> None:
        figures.paired_layers(path, rows, models=(std.label, adv.label),
                              title="Local response differences per stage (mean over images, 95% CI)")

    return Measurement(statistics=statistics, n=len(std_set.y), values=values, tables={"table1": rows},
                       figures={"table1": draw}, notes=notes)


# ---------------------------------------------------------------------------------------------
# shared helpers


MIN_GROUP = 5  # fewest images a group (successful / failed attacks) needs for a ratio of its means


def bootstrap_images(statistic: Callable[[np.ndarray], float], n: int, *, confidence: float = stats.CONFIDENCE,
                     method: str = "BCa", seed: int = 0) -> stats.Estimate:
    """Interval of a statistic of whole per-image arrays (a curve's peak, a rank correlation over
    models): resample image indices with replacement and recompute ``statistic(indices)``."""
    def over(idx, axis=-1):
        idx = np.asarray(idx).astype(int)
        flat = idx.reshape(-1, idx.shape[-1])
        return np.array([statistic(row) for row in flat], dtype=float).reshape(idx.shape[:-1])

    return stats.bootstrap(over, np.arange(n, dtype=float), confidence=confidence, method=method, seed=seed)


def same_images(a: AdversarialSet, b: AdversarialSet) -> None:
    if a.x.shape != b.x.shape or not a.y.equal(b.y) or not a.x.equal(b.x):
        raise ValueError(f"the sets made on {a.source} and {b.source} must attack the same natural images")


def outcome_groups(model: TrainedModel, s: AdversarialSet) -> tuple[np.ndarray, np.ndarray]:
    """Correctly classified natural images, split by the attack's outcome: (successful, failed) masks."""
    clean = correct(model.module, s.x, s.y).bool()
    after = correct(model.module, s.x_adv, s.y).bool()
    success, failed = (clean & ~after).cpu().numpy(), (clean & after).cpu().numpy()
    for name, mask in (("successful", success), ("failed", failed)):
        if mask.sum() < MIN_GROUP:
            raise stats.Unmeasurable(f"{s.attack} on {model.label}: only {int(mask.sum())} {name} attacks among "
                             f"{int(clean.sum())} correctly classified images; a ratio of group means needs "
                             f"{MIN_GROUP}: measure on more images (a larger budget)")
    return success, failed


def _group_ratio(values: np.ndarray, success: np.ndarray, failed: np.ndarray) -> float:
    return float(values[success].mean() / values[failed].mean())


# ---------------------------------------------------------------------------------------------
# LP-9, LP-10: successful vs failed attacks (Tables 2 and 4)


@measures("LP-9", OUTCOME_COMPARISON)
def response_differences_by_outcome(model: TrainedModel, attack_set: AdversarialSet, *,
                                    layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """LP-9 (Table 2, Section 4.3): Max and Total response differences of successful over failed attacks, per
    stage, on the correctly classified images (``outcome_comparison``)."""
    success, failed = outcome_groups(model, attack_set)
    d = response_differences(model.module, attack_set.x, attack_set.x_adv, layers=layers, batch_size=batch_size)
    return outcome_comparison(d, success, failed, layers=layers, bounds=ceilings(model, attack_set, layers),
                              title=f"{model.label}, {attack_set.attack}", attack=attack_set.attack)


def outcome_comparison(d: dict, success: np.ndarray, failed: np.ndarray, *, layers: tuple[str, ...],
                       bounds: dict[str, float | None] | None = None, title: str = "",
                       attack: str = "attack") -> Measurement:
    """LP-9 from per-image response differences ``d`` and the two group masks: per stage and kind the
    ratio of group means and its deviation from 1 (unpaired bootstrap). The Layer4 Total ratio's
    interval is also given at 98% two-sided: its lower end is the one-sided 99% bound, so "above the
    threshold" is a one-sided test at p < 0.01. A Max whose groups sit at their ceiling (``bounds``)
    is marked uninformative."""
    statistics, values, rows, notes = {}, {}, [], []
    for layer in layers:
        row = {"layer": LAYER_NAMES.get(layer, layer)}
        for kind in KINDS:
            v = d[layer][kind].numpy()
            a, b = v[success], v[failed]
            ratio = stats.ratio_of_means(a, b, paired=False)
            statistics[ratio_name(kind, layer)] = ratio
            statistics[deviation_name(kind, layer)] = stats.bootstrap(
                lambda s, f, axis=-1: np.abs(np.mean(s, axis=axis) / np.mean(f, axis=axis) - 1), a, b,
                paired=False, method="percentile")
            if kind == "max" and bounds:
                bound = bounds.get(layer)
                mark_saturated(statistics, [ratio_name("max", layer), deviation_name("max", layer)],
                               ceiling_note(layer, {"successful": (a, bound), "failed": (b, bound)}), notes)
            values[f"success_{kind}_{layer}"] = float(a.mean())
            values[f"failed_{kind}_{layer}"] = float(b.mean())
            row.update({f"{kind}_success": float(a.mean()), f"{kind}_failed": float(b.mean()),
                        f"{kind}_ratio": ratio.value, f"{kind}_ratio_ci": [ratio.low, ratio.high]})
        rows.append(row)
    v4 = d[layers[-1]]["total"].numpy()
    statistics[one_sided_name(layers[-1])] = stats.ratio_of_means(v4[success], v4[failed], paired=False,
                                                                  confidence=0.98)
    values.update({"successful_attacks": float(success.sum()), "failed_attacks": float(failed.sum())})

    def draw(path: Path) -> None:
        lpfig.outcome_layers(path, {attack: rows}, title=f"{title}: successful / failed attacks "
                                                         f"({int(success.sum())} / {int(failed.sum())} images)")

    return Measurement(
        statistics=statistics, n=int(success.sum() + failed.sum()), values=values, tables={"table2": rows},
        figures={"table2": draw}, notes=notes,
        tests={f"{layers[-1]}_total_success_greater": stats.mann_whitney(v4[success], v4[failed])},
    )


@measures("LP-10", OUTCOME_RATIOS)
def outcome_ratios_std_vs_adv(std: TrainedModel, adv: TrainedModel, *, std_fgsm_set: AdversarialSet,
                              adv_pgd_set: AdversarialSet, adv_fgsm_set: AdversarialSet,
                              layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """LP-10 (Table 4, Appendix C): on ADV the Layer4 successful/failed ratio is smaller than on STD (FGSM,
    Table 2), under PGD-20 and FGSM alike; and ADV's Layer4 differences are smaller under FGSM than under PGD-20.
    The ratio gaps resample images jointly (all three sets attack the same images)."""
    same_images(std_fgsm_set, adv_pgd_set)
    same_images(std_fgsm_set, adv_fgsm_set)
    last = layers[-1]
    groups = {"std_fgsm": outcome_groups(std, std_fgsm_set), "pgd20": outcome_groups(adv, adv_pgd_set),
              "fgsm": outcome_groups(adv, adv_fgsm_set)}
    diffs = {"std_fgsm": response_differences(std.module, std_fgsm_set.x, std_fgsm_set.x_adv, layers=(last,),
                                              batch_size=batch_size),
             "pgd20": response_differences(adv.module, adv_pgd_set.x, adv_pgd_set.x_adv, layers=layers,
                                           batch_size=batch_size),
             "fgsm": response_differences(adv.module, adv_fgsm_set.x, adv_fgsm_set.x_adv, layers=layers,
                                          batch_size=batch_size)}
    total = {k: d[last]["total"].numpy() for k, d in diffs.items()}
    n = len(std_fgsm_set.y)

    def ratio(key, i):
        s, f = groups[key]
        return _group_ratio(total[key][i], s[i], f[i])

    statistics = {ratio_gap_name(last, a): bootstrap_images(lambda i, a=a: ratio(a, i) - ratio("std_fgsm", i), n)
                  for a in OWN_ATTACKS}
    clean = correct(adv.module, adv_pgd_set.x, adv_pgd_set.y).bool().cpu().numpy()
    for kind in KINDS:
        statistics[fgsm_over_pgd20_name(last, kind)] = stats.ratio_of_means(
            diffs["fgsm"][last][kind].numpy()[clean], diffs["pgd20"][last][kind].numpy()[clean])
    values, tables = {}, {}
    for a in OWN_ATTACKS:
        s, f = groups[a]
        rows = []
        for layer in layers:
            row = {"layer": LAYER_NAMES.get(layer, layer)}
            for kind in KINDS:
                v = diffs[a][layer][kind].numpy()
                values[f"{a}_success_{kind}_{layer}"] = float(v[s].mean())
                values[f"{a}_failed_{kind}_{layer}"] = float(v[f].mean())
                row.update({f"{kind}_success": float(v[s].mean()), f"{kind}_failed": float(v[f].mean()),
                            f"{kind}_ratio": float(v[s].mean() / v[f].mean())})
            rows.append(row)
        tables[f"table4_{a}"] = rows
        values[f"{a}_layer4_total_ratio"] = _group_ratio(total[a], s, f)
    values["std_fgsm_layer4_total_ratio"] = _group_ratio(total["std_fgsm"], *groups["std_fgsm"])

    def draw(path: Path) -> None:
        lpfig.outcome_layers(path, {k.replace("table4_", ""): r for k, r in tables.items()},
                             title=f"{adv.label}: successful / failed attacks per stage (Table 4)")

    return Measurement(statistics=statistics, n=n, values=values, tables=tables, figures={"table4": draw})


# ---------------------------------------------------------------------------------------------
# LP-11, LP-12: own vs transferred adversarial examples (Tables 3 and 5)


@measures("LP-12", LAYER_COMPARISON + TRANSFER_ACCURACY)
@measures("LP-11", LAYER_COMPARISON + TRANSFER_ACCURACY)
def transfer_response_differences(target: TrainedModel, *, own_set: AdversarialSet, transferred_set: AdversarialSet,
                                  layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """LP-11 (Table 3, Section 4.3; target ADV, transferred from STD) / LP-12 (Table 5, Appendix C; target STD,
    transferred from ADV): response differences on ``target`` of examples transferred from another model
    over those of its own attack (ratio of means, paired over images), and target's accuracy."""
    same_images(own_set, transferred_set)
    d_own = response_differences(target.module, own_set.x, own_set.x_adv, layers=layers, batch_size=batch_size)
    d_tr = response_differences(target.module, transferred_set.x, transferred_set.x_adv, layers=layers,
                                batch_size=batch_size)
    notes: list[str] = []
    statistics, values, rows = layer_comparison(
        {"transferred": d_tr, "own": d_own}, layers, notes=notes,
        bounds={"transferred": ceilings(target, transferred_set, layers), "own": ceilings(target, own_set, layers)})
    clean = correct(target.module, own_set.x, own_set.y).cpu().numpy()
    own = correct(target.module, own_set.x_adv, own_set.y).cpu().numpy()
    transferred = correct(target.module, transferred_set.x_adv, transferred_set.y).cpu().numpy()
    statistics[TRANSFER_ACCURACY[0]] = stats.mean_difference(clean, transferred)
    statistics[TRANSFER_ACCURACY[1]] = stats.mean_difference(transferred, own)
    values.update({"clean_accuracy": float(clean.mean()), "own_attack_accuracy": float(own.mean()),
                   "transferred_accuracy": float(transferred.mean())})
    accs = {"clean": stats.mean(clean), "own attack": stats.mean(own),
            f"from {transferred_set.source}": stats.mean(transferred)}

    def draw(path: Path) -> None:
        figures.paired_layers(path, rows, models=(f"own ({target.label})", f"from {transferred_set.source}"),
                              keys=("own", "transferred"),
                              title=f"{target.label}: own vs transferred {own_set.attack} (mean over images, 95% CI)")

    return Measurement(
        statistics=statistics, n=len(own_set.y), values=values, notes=notes,
        tables={"responses": rows, "accuracy": [{"images": k, "accuracy": e.value, "accuracy_ci": [e.low, e.high]}
                                                for k, e in accs.items()]},
        figures={"responses": draw, "accuracy": lambda path: figures.bars(
            path, accs, ylabel="accuracy", ylim=(0, 1), title=f"{target.label}: accuracy (95% CI)")},
    )


# ---------------------------------------------------------------------------------------------
# LP-13: the weight-decay sweep of ADV models (Figs. 5 and 9)


def kernel_magnitudes(module: torch.nn.Module) -> np.ndarray:
    """Mean |w| of every spatial kernel (one per output x input channel) of every k x k conv, k > 1."""
    out = [m.weight.detach().abs().mean((-2, -1)).flatten().cpu()
           for m in module.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1]
    return torch.cat(out).numpy()


@measures("LP-13", WEIGHT_DECAY_TRENDS)
def weight_decay_sweep(members: list[tuple[float, TrainedModel, AdversarialSet]], *,
                       layers: tuple[str, ...] = RESNET_STAGES, batch_size: int = 500) -> Measurement:
    """LP-13 (Figs. 5 and 9, Section 4.4): Spearman rho against weight decay of each model's mean kernel magnitude,
    mean Layer4 Max and Total under its own PGD-20, and its clean - robust accuracy gap (every model attacked on the
    same images).

    The unit is the trained model: each statistic is ``stats.trend`` over the k models (one value each), decided
    by the exact one-sided permutation test over their k! orders (k = 4: a perfect order has p = 1/24); several
    seeds pool into Page's L. Kernels and images only make each model's value precise, so resampling them (as
    an earlier version did) gave -1 [-1, -1] for any monotone sweep, a certainty over 4 models it does not have."""
    members = sorted(members, key=lambda m: m[0])
    if len(members) < 4:
        raise ValueError(f"a weight-decay sweep needs at least 4 models, got {len(members)}")
    for _, _, s in members[1:]:
        same_images(members[0][2], s)
    wds = [wd for wd, _, _ in members]
    kernels = np.stack([kernel_magnitudes(m.module) for _, m, _ in members], 1)          # (kernels, models)
    diffs = [response_differences(m.module, s.x, s.x_adv, layers=layers, batch_size=batch_size) for _, m, s in members]
    resp = {(layer, kind): np.stack([d[layer][kind].numpy() for d in diffs], 1) for layer in layers
            for kind in KINDS}                                                              # (images, models)
    clean = np.stack([correct(m.module, s.x, s.y).cpu().numpy() for _, m, s in members], 1)
    robust = np.stack([correct(m.module, s.x_adv, s.y).cpu().numpy() for _, m, s in members], 1)
    n, last = len(clean), layers[-1]
    per_model = dict(zip(trend_names(last), (kernels.mean(0), resp[last, "max"].mean(0), resp[last, "total"].mean(0),
                                             clean.mean(0) - robust.mean(0))))
    # the claim: each falls as weight decay grows
    statistics = {name: stats.trend(v, wds, alternative="less") for name, v in per_model.items()}
    rows, values = [], {}
    for k, (wd, m, _) in enumerate(members):
        row = {"weight_decay": wd, "model": m.label, "kernel_magnitude": float(kernels[:, k].mean()),
               "clean": float(clean[:, k].mean()), "robust": float(robust[:, k].mean()),
               "gap": float(clean[:, k].mean() - robust[:, k].mean())}
        for layer in layers:
            for kind in KINDS:
                row[f"{kind}_{layer}"] = float(resp[layer, kind][:, k].mean())
        rows.append(row)
        values.update({f"kernel_magnitude_wd{wd:g}": row["kernel_magnitude"], f"gap_wd{wd:g}": row["gap"],
                       f"{last}_max_wd{wd:g}": row[f"max_{last}"], f"{last}_total_wd{wd:g}": row[f"total_{last}"]})
    panels = {kind: {LAYER_NAMES.get(layer, layer): [r[f"{kind}_{layer}"] for r in rows] for layer in layers}
              for kind in KINDS}
    accuracy = {"clean": [r["clean"] for r in rows], "robust (PGD-20)": [r["robust"] for r in rows]}
    magnitude = [r["kernel_magnitude"] for r in rows]
    return Measurement(
        statistics=statistics, n=n, values=values, tables={"fig5": rows},
        notes=[f"trends over {len(members)} trained models (weight decays {', '.join(f'{wd:g}' for wd in wds)}): "
               f"exact permutation tests over their {math.factorial(len(members))} orders, one value per model"],
        figures={
            "fig5": lambda path: lpfig.weight_decay_panels(
                path, wds, magnitude, panels["max"], accuracy, kind="Max",
                title="Fig. 5: ADV models by weight decay: kernel magnitude, Max response differences, accuracy"),
            "fig9": lambda path: lpfig.weight_decay_panels(
                path, wds, magnitude, panels["total"], accuracy, kind="Total",
                title="Fig. 9: ADV models by weight decay: Total response differences"),
        },
    )
