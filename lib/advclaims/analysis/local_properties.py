"""Analyses of "Dissecting local properties of adversarial examples" (claims LP-1 .. LP-13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import stats
from ..evaluation import correct
from ..measurement import Measurement
from ..models import RESNET_STAGES
from ..pipeline import AdversarialSet, TrainedModel
from . import figures
from .responses import response_differences

LAYER_NAMES = {"conv1": "Conv1", "layer0": "Layer0", "layer1": "Layer1", "layer2": "Layer2",
               "layer3": "Layer3", "layer4": "Layer4"}


def fgsm_versus_pgd(model: TrainedModel, *, fgsm_set: AdversarialSet, pgd_set: AdversarialSet) -> Measurement:
    """LP-7: accuracy under FGSM minus accuracy under PGD-20, paired over the same test images."""
    if not (fgsm_set.y.equal(pgd_set.y)):
        raise ValueError("FGSM and PGD sets must attack the same images")
    clean = correct(model.module, fgsm_set.x, fgsm_set.y).cpu().numpy()
    ok_fgsm = correct(model.module, fgsm_set.x_adv, fgsm_set.y).cpu().numpy()
    ok_pgd = correct(model.module, pgd_set.x_adv, pgd_set.y).cpu().numpy()
    accs = {"clean": stats.mean(clean), "FGSM": stats.mean(ok_fgsm), "PGD-20": stats.mean(ok_pgd)}
    return Measurement(
        statistics={"fgsm_minus_pgd20_accuracy": stats.mean_difference(ok_fgsm, ok_pgd)},
        n=len(clean),
        values={"clean_accuracy": accs["clean"].value, "fgsm_accuracy": accs["FGSM"].value,
                "pgd20_accuracy": accs["PGD-20"].value},
        tables={"accuracy": [{"model": model.label, "attack": k, "accuracy": e.value, "low": e.low, "high": e.high}
                             for k, e in accs.items()]},
        figures={"accuracy": lambda path: figures.bars(
            path, {k: e for k, e in accs.items()}, ylabel="accuracy",
            title=f"{model.label}: accuracy by attack (95% CI)")},
    )


def response_differences_std_vs_adv(std: TrainedModel, adv: TrainedModel, *, std_set: AdversarialSet,
                                    adv_set: AdversarialSet, layers: tuple[str, ...] = RESNET_STAGES,
                                    batch_size: int = 500) -> Measurement:
    """LP-8: Max and Total local response differences per stage, each model under its own attack.

    Statistics are ratios of means STD/ADV over the same test images (paired bootstrap): scale-free,
    since the two networks' activations need not share a scale.
    """
    if not std_set.y.equal(adv_set.y):
        raise ValueError("STD and ADV sets must attack the same images")
    d_std = response_differences(std.module, std_set.x, std_set.x_adv, layers=layers, batch_size=batch_size)
    d_adv = response_differences(adv.module, adv_set.x, adv_set.x_adv, layers=layers, batch_size=batch_size)
    statistics, values, rows = {}, {}, []
    for layer in layers:
        row = {"layer": LAYER_NAMES.get(layer, layer)}
        for kind in ("max", "total"):
            a, b = d_std[layer][kind].numpy(), d_adv[layer][kind].numpy()
            ratio = stats.ratio_of_means(a, b)
            statistics[f"{kind}_ratio_{layer}"] = ratio
            m_std, m_adv = stats.mean(a), stats.mean(b)
            values[f"std_{kind}_{layer}"] = m_std.value
            values[f"adv_{kind}_{layer}"] = m_adv.value
            row.update({f"{kind}_std": m_std.value, f"{kind}_std_ci": [m_std.low, m_std.high],
                        f"{kind}_adv": m_adv.value, f"{kind}_adv_ci": [m_adv.low, m_adv.high],
                        f"{kind}_ratio": ratio.value, f"{kind}_ratio_ci": [ratio.low, ratio.high]})
        rows.append(row)

    def draw(path: Path) -> None:
        figures.paired_layers(path, rows, models=(std.label, adv.label),
                              title="Local response differences per stage (mean over images, 95% CI)")

    return Measurement(statistics=statistics, n=len(std_set.y), values=values, tables={"table1": rows},
                       figures={"table1": draw})
