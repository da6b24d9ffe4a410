"""IB-5 and IB-6 of the information-bottleneck paper: the NRF attack against FGSM, BIM, PGD and CW (Table 3), and
the gradient-norm ablation (Table 4). Perturbation norms are read over successful attacks only, with the share
of them beyond the L-inf budget, so that an unequal threat model is visible beside every accuracy.

NRF's masks are fitted on the clean test images with their true labels (the authors' code), and accuracy is then
scored on the same labels; the statistics again with NRF on masks fitted on the model's predictions are the
sensitivity ``mask_labels`` = 1 (``NRF_LABELS``; suite's module docstring: why that variant costs almost nothing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from advclaims.verdict import stats
from advclaims.evaluation import correct
from advclaims.verdict.measurement import Measurement, measures
from advclaims.analysis.info_bottleneck.suite import ATTACKS, THREAT_MODEL, EvaluationSuite, relabelled_rows

from advclaims.analysis.info_bottleneck import figures
from advclaims.analysis.info_bottleneck.features import (MASK_LABEL_CODES, MASK_LABELS_PARAMETER, as_numpy, suite_notes,
                                                         table_row)
from advclaims.analysis.info_bottleneck.suite import ATTACK_LABELS

BEYOND_EPS_TOL = 1e-6  # float rounding of a confined attack's box edge, in pixels
NRF_LABELS = ("NRF's masks are fitted per test image with its true label (the authors' code) and accuracy is scored on the "
              "same labels; the sensitivity mask_labels = 1 runs every NRF variant with masks fitted on the model's "
              "predictions instead. The two mask sets differ only on images the model misclassifies, which NRF returns "
              "unchanged whatever its mask, so the variant re-attacks only images whose masks differ and that the model "
              "classifies correctly")


def successful_perturbations(s, successful: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Per image: L2 and L-inf norms of x_adv - x; ``successful`` (bool) marks the attack's successes (a clean
    image the model gets right, misclassified after the attack). Norms are read over those only: C&W and NRF
    return x where they fail, and an image misclassified already needs no perturbation, so a mean over all
    images counts either as a perturbation of size 0. ``beyond_eps``: which successes exceed eps in L-inf."""
    delta = (s.x_adv - s.x).flatten(1)
    l2, linf = as_numpy(delta.norm(dim=1)), as_numpy(delta.abs().amax(dim=1))
    return {"l2": l2, "linf": linf, "successful": successful, "beyond_eps": linf[successful] > eps + BEYOND_EPS_TOL}


def mean_or_value(values: np.ndarray):
    """The mean with its interval where there are 2 or more values; the plain mean (or None) otherwise."""
    if len(values) >= 2:
        return stats.mean(values)
    return float(values.mean()) if len(values) else None


# ---------------------------------------------------------------------------------------------
# IB-5 (Table 3) and IB-6 (Table 4)


def _attack_table(suite: EvaluationSuite, names: tuple[str, ...], *, build_order: tuple[str, ...] = (),
                  mask_labels: str = "true"):
    """Accuracy and perturbation norms per attack; ``build_order`` says which sets to build first, so that two
    claims sharing a set (IB-5 and IB-6 share NRF) build it once without waiting on each other. Norms are
    over the attack's successes (clean right, adversarial wrong), beside their share of the images and the
    fraction of them beyond the L-inf eps of FGSM/BIM/PGD. ``mask_labels``: the clean masks NRF-kind attacks use;
    with "predicted" only those attacks are measured (the others use no mask) and the Clean row is left out."""
    for name in build_order:
        suite.attack(name, mask_labels=mask_labels)
    ok, norms, rows = {}, {}, []
    clean = as_numpy(correct(suite.model.module, suite.x, suite.y))
    if mask_labels == "true":
        rows.append(table_row(attack="Clean", threat_model="–", mask_labels="–", accuracy=stats.mean(clean),
                              successful=0.0, l2=0.0, linf=0.0, beyond_eps=0.0, steps=0))
    for name in names:
        if mask_labels != "true" and ATTACKS[name][0] != "nrf":
            continue
        s = suite.attack(name, mask_labels=mask_labels)
        ok[name] = as_numpy(correct(suite.model.module, s.x_adv, suite.y))
        p = norms[name] = successful_perturbations(s, (clean == 1) & (ok[name] == 0), suite.eps)
        won = p["successful"]
        rows.append(table_row(attack=ATTACK_LABELS[name], threat_model=THREAT_MODEL[name],
                              mask_labels=mask_labels if ATTACKS[name][0] == "nrf" else "–", accuracy=stats.mean(ok[name]),
                              successful=float(won.mean()), l2=mean_or_value(p["l2"][won]),
                              linf=mean_or_value(p["linf"][won]),
                              beyond_eps=float(p["beyond_eps"].mean()) if won.any() else None,
                              steps=s.params.get("steps", 1)))
    return clean, ok, norms, rows


def _with_predicted_label_masks(suite: EvaluationSuite, names: tuple[str, ...], ok: dict, statistics_of, values: dict,
                                rows: list) -> dict:
    """The sensitivity mask_labels = 1: ``statistics_of(ok)`` with every NRF-kind attack of ``names`` run on
    predicted-label masks (the other attacks use no mask: their per-image results are reused). Adds their
    accuracies, how many images' masks differ and how many were re-attacked to ``values``, their rows to ``rows``."""
    _, predicted, _, predicted_rows = _attack_table(suite, names, mask_labels="predicted")
    rows.extend(predicted_rows)
    for name, v in predicted.items():
        values[f"{name}_accuracy_predicted_label_masks"] = float(v.mean())
    for channels in sorted({ATTACKS[n][1]["channels"] for n in predicted}):
        differ, reattacked = relabelled_rows(suite, channels)
        values[f"{channels}_masks_differ_predicted_labels"] = float(differ.sum())
        values[f"{channels}_reattacked_predicted_labels"] = float(reattacked.sum())
    return {f"{MASK_LABEL_CODES['predicted']:g}": statistics_of({**ok, **predicted})}


def _deciding(rows: list[dict]) -> list[dict]:
    """The table's rows without the sensitivity's (the figure shows the deciding protocol)."""
    return [r for r in rows if r["mask_labels"] != "predicted"]


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


TABLE3_BOUNDED = ("fgsm", "bim", "pgd")  # IB-5: the L-inf attacks, each held against NRF confined and unconfined
# IB-5: (statistic, attack, the NRF variant it is held against)
TABLE3_PAIRS = ((("cw_minus_nrf", "cw", "nrf"),)
                + tuple((f"{a}_minus_nrf_linf", a, "nrf_linf") for a in TABLE3_BOUNDED)
                + tuple((f"{a}_minus_nrf", a, "nrf") for a in TABLE3_BOUNDED))
TABLE3_STATISTICS = tuple(name for name, _, _ in TABLE3_PAIRS)
TABLE4_VARIANTS = ("nrf_min", "rf_max", "rf_min")  # IB-6: the ablations, each held against NRF (max ||G_nr||)
TABLE4_STATISTICS = tuple(f"{n}_minus_nrf" for n in TABLE4_VARIANTS)


def _table3_statistics(ok: dict[str, np.ndarray]) -> dict[str, stats.Estimate]:
    """IB-5's checked statistics from per-image correctness: other attack minus NRF, paired over images."""
    return {name: stats.mean_difference(ok[a], ok[nrf]) for name, a, nrf in TABLE3_PAIRS}


def _table4_statistics(ok: dict[str, np.ndarray]) -> dict[str, stats.Estimate]:
    """IB-6's checked statistics: each variant's accuracy minus maximised ||G_nr||'s (NRF), paired over images."""
    return {name: stats.mean_difference(ok[n], ok["nrf"]) for name, n in zip(TABLE4_STATISTICS, TABLE4_VARIANTS)}


@measures("IB-5", TABLE3_STATISTICS, parameters=(MASK_LABELS_PARAMETER,))
def nrf_versus_standard_attacks(suite: EvaluationSuite) -> Measurement:
    """IB-5 (Section 4, Eq. 8, Table 3): accuracy under FGSM, BIM, PGD, CW and NRF (as in the paper: unbounded L2;
    and confined to the L-inf eps-ball), each beside its perturbation norms over its successes and the
    fraction of those beyond eps in L-inf, so that NRF's unequal threat model stays visible.
    Statistics are accuracy differences (other attack minus NRF), paired over test images."""
    names = ("fgsm", "bim", "pgd", "cw", "nrf", "nrf_linf")
    clean, ok, norms, rows = _attack_table(suite, names, build_order=("nrf", "nrf_linf"))
    statistics = _table3_statistics(ok)
    values = {f"{n}_accuracy": float(v.mean()) for n, v in ok.items()}
    values.update(_norm_values(norms))
    values[f"{suite.arch}_clean_accuracy"] = float(clean.mean())
    sensitivity = {MASK_LABELS_PARAMETER: _with_predicted_label_masks(suite, names, ok, _table3_statistics, values,
                                                                      rows)}

    def draw(path: Path) -> None:
        figures.accuracy_and_norms(path, _deciding(rows), eps=suite.eps,
                            title=f"{suite.model.label}: accuracy and perturbation size per attack")

    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"table3": rows},
                       figures={f"table3_{suite.arch}": draw}, sensitivity=sensitivity,
                       notes=suite_notes(suite) + [NRF_LABELS])


@measures("IB-6", TABLE4_STATISTICS, parameters=(MASK_LABELS_PARAMETER,))
def gradient_norm_ablation(suite: EvaluationSuite) -> Measurement:
    """IB-6 (Section 4, Table 4): the NRF objective with the non-robust or the robust channel mask, its gradient norm
    maximised or minimised (Table 4). Statistics: accuracy under each variant minus accuracy under
    maximised ||G_nr|| (NRF), paired over test images."""
    names = ("nrf", *TABLE4_VARIANTS)
    clean, ok, norms, rows = _attack_table(suite, names, build_order=TABLE4_VARIANTS)
    statistics = _table4_statistics(ok)
    values = {f"{n}_accuracy": float(v.mean()) for n, v in ok.items()}
    values.update(_norm_values(norms))
    sensitivity = {MASK_LABELS_PARAMETER: _with_predicted_label_masks(suite, names, ok, _table4_statistics, values,
                                                                      rows)}

    def draw(path: Path) -> None:
        figures.accuracy_and_norms(path, _deciding(rows), eps=suite.eps,
                                   title=f"{suite.model.label}: gradient-norm ablation (Table 4)")

    return Measurement(statistics=statistics, n=len(suite.y), values=values, tables={"table4": rows},
                       figures={f"table4_{suite.arch}": draw}, sensitivity=sensitivity,
                       notes=suite_notes(suite) + [NRF_LABELS])


