"""The targeted PGD-20 set that HF-2, HF-3 and HF-4 share, stage features and class means.

High frequency patterns paper (only the abstract is public; every protocol here is ours): each test image
is pushed toward a seeded random class other than its own; features are a stage's whole output, flattened;
class means are over clean images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from advclaims.verdict import stats
from advclaims.attacks import pgd
from advclaims.evaluation import predict
from advclaims.models import RESNET_STAGES
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel, attack_params
from advclaims.analysis.responses import stage_outputs

if TYPE_CHECKING:  # the pipeline is handed in; an analysis imports no orchestration
    from advclaims.checkpoints.pipeline import Pipeline

LAYER_NAMES = {"conv1": "Conv1", "layer0": "Layer0", "layer1": "Layer1", "layer2": "Layer2",
               "layer3": "Layer3", "layer4": "Layer4"}


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


def targeted_pgd_set(pipeline: "Pipeline", model: TrainedModel, dataset: str, *, seed: int = 0) -> TargetedSet:
    """Targeted PGD-20 (the evaluation attack of the common setting, descending the target's
    cross-entropy) on the budget's test images, cached in the store by model, attack and targets."""
    bundle = pipeline.dataset(dataset)
    x, y = bundle.test.images(), bundle.test.y
    target = draw_targets(y, bundle.info.num_classes, seed=seed)
    params = {**attack_params("pgd20", bundle.info.eps, pipeline.budget), "targeted": True}
    fields = {"model": model.key, "attack": "pgd20_targeted", "params": params, "dataset": dataset,
              "test_n": pipeline.budget.test_images(dataset), "seed": seed,
              "targets": {"rule": "uniform over the other classes", "seed": seed,
                          "sha256": hashlib.sha256(target.numpy().tobytes()).hexdigest()}}

    def make():  # attacked as Pipeline.adversarial is (the run's precision and settings), and keyed alike
        x_adv = pipeline.attack_images(model, pgd, x, target.to(x.device), generator=torch.Generator().manual_seed(seed),
                                       **params)
        return {"x_adv": x_adv.cpu(), "target": target}, {"images": len(y)}

    entry = pipeline.cached("targeted", fields, make)
    spec = entry.provenance["spec"]
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


