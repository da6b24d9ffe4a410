"""The evaluation of Kim, Lee & Ro (NeurIPS 2021) on one adversarially trained model: its attacks
and channel masks, each built once per spec and kept in the checkpoint store.

Attack settings are the authors' (test.py and loader/loader.py of their public code, which uses
torchattacks), at the dataset's eps:
  FGSM    one step of eps
  BIM     step 1/255, int(min(255 eps + 4, 1.25 * 255 eps)) steps (torchattacks' default schedule)
  PGD     10 steps of 2.3 eps / 10, random start
  CW      C&W L2, c = 0.1, Adam lr 0.1, 200 steps (unbounded L2)
  NRF     advclaims.attacks.nrf, c = 0.1, lr 0.1, 200 steps, non-robust mask, ||G_nr|| maximised
          (unbounded L2, as in the paper); ``nrf_linf``: the same confined to the L-inf eps-ball
  Table 4 ``nrf_min`` (||G_nr|| minimised), ``rf_max`` / ``rf_min`` (robust mask, maximised / minimised)
Every budget runs these settings unchanged (the smoke budget too: the 200 Adam steps of CW and the
NRF variants fit this paper's CI share on a narrow VGG-16). NRF's masks are the bottleneck's,
fitted on the clean test images with their true labels (the authors' code); ``attack(name, mask_labels=
"predicted")`` is the same attack with masks fitted on the model's predictions instead (the sensitivity
mask_labels of IB-5 and IB-6).

Why that variant costs (almost) nothing: each image's noise scales are fitted from its own features, label and
noise draws only (the cross-entropy is a mean over images, the information loss a mean over images and
channels, Adam is elementwise, the noise draws and the threshold T do not depend on the labels), so the two
mask sets differ only on images whose prediction is not their label, i.e. images the model misclassifies. NRF
returns such an image as it is (its first iterate is already misclassified and at distance ~0, and the attack
keeps the closest misclassified iterate) whatever its mask. So the predicted-label NRF takes the true-label
NRF's images and re-attacks only those whose masks differ and that the model classifies correctly (none,
unless the fit's float rounding differs between the two fits).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from advclaims import data as data_mod
from advclaims.attacks import bim, cw_l2, fgsm, pgd
from advclaims.attacks.nrf import nrf
from advclaims.evaluation import attack_batched, correct
from advclaims.checkpoints.artifacts import AdversarialSet, TrainedModel
from advclaims.analysis.info_bottleneck.bottleneck import STEPS as MASK_STEPS
from advclaims.analysis.info_bottleneck.bottleneck import (BETA, FIT_BATCH, ChannelMasks, check_split, encode_all,
                                                           fit_channel_masks, fit_fields, predictions_of_channels,
                                                           split_at_last_conv_block, vectorised_on)

if TYPE_CHECKING:  # the pipeline is handed in; an analysis imports no orchestration
    from advclaims.checkpoints.pipeline import Pipeline

OPTIMISER_STEPS = 200  # Adam steps of CW and NRF in the authors' code
ATTACK_BATCH = 100   # images per call of the optimisation attacks (the authors' test batch size)
MASK_LABELS = ("true", "predicted")  # the labels a mask is fitted with (the authors': true)

# name -> (kind, keyword settings); attack_params adds eps, step sizes and step counts
_NRF = {"c": 0.1, "lr": 0.1}
ATTACKS = {
    "fgsm": ("fgsm", {}),
    "bim": ("bim", {}),
    "pgd": ("pgd", {"steps": 10, "random_start": True}),
    "cw": ("cw", {"c": 0.1, "lr": 0.1}),
    "nrf": ("nrf", {**_NRF, "channels": "non_robust", "gradient_norm": "max", "linf": False}),
    "nrf_linf": ("nrf", {**_NRF, "channels": "non_robust", "gradient_norm": "max", "linf": True}),
    "nrf_min": ("nrf", {**_NRF, "channels": "non_robust", "gradient_norm": "min", "linf": False}),
    "rf_max": ("nrf", {**_NRF, "channels": "robust", "gradient_norm": "max", "linf": False}),
    "rf_min": ("nrf", {**_NRF, "channels": "robust", "gradient_norm": "min", "linf": False}),
}
ATTACK_LABELS = {"fgsm": "FGSM", "bim": "BIM", "pgd": "PGD", "cw": "CW", "nrf": "NRF (L2, paper)",
                 "nrf_linf": "NRF (L-inf eps)", "nrf_min": "||G_nr|| min", "rf_max": "||G_r|| max",
                 "rf_min": "||G_r|| min"}
THREAT_MODEL = {"fgsm": "L-inf eps", "bim": "L-inf eps", "pgd": "L-inf eps", "cw": "L2, unbounded",
                "nrf": "L2, unbounded", "nrf_linf": "L-inf eps", "nrf_min": "L2, unbounded",
                "rf_max": "L2, unbounded", "rf_min": "L2, unbounded"}


def attack_params(name: str, eps: float, iterations=lambda n: n) -> dict:
    """The settings of one of ATTACKS at radius eps (see the module docstring); ``iterations`` caps step counts
    (a preflight's budget: ``Budget.iterations``; step sizes keep the uncapped schedule's)."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}")
    kind, params = ATTACKS[name]
    params = dict(params)
    if kind in ("fgsm", "bim", "pgd"):
        params["eps"] = eps
    if kind == "bim":
        params.update(alpha=1 / 255, steps=int(min(255 * eps + 4, 1.25 * 255 * eps)))
    if kind == "pgd":
        params["alpha"] = 2.3 * eps / params["steps"]
    if kind in ("cw", "nrf"):
        params["steps"] = OPTIMISER_STEPS
    if kind == "nrf" and params.pop("linf"):
        params["eps"] = eps
    if "steps" in params:
        params["steps"] = iterations(params["steps"])
    return params


def relabelled_rows(suite, channels: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For an NRF-kind attack on ``channels`` ("robust" / "non_robust") of ``suite`` (an EvaluationSuite or a
    stand-in with masks(), model, x, y): (differ, reattacked), bool (N,) on the CPU: the images whose clean masks
    differ between true and predicted labels, and those of them the model classifies correctly, which the
    predicted-label attack runs anew (module docstring)."""
    own = suite.masks("clean").index(channels)
    other = suite.masks("clean", labels="predicted").index(channels).to(own.device)
    differ = (own != other).any(1).cpu()
    return differ, differ & correct(suite.model.module, suite.x, suite.y).bool().cpu()


class EvaluationSuite:
    """One ADV model's test images, channel masks and attacks, each kept in the store (``Pipeline.cached``, which also
    holds them for the session)."""

    def __init__(self, pipeline: "Pipeline", dataset: str, model: TrainedModel, *, seed: int = 0,
                 ):
        self.pipeline, self.dataset, self.model, self.seed = pipeline, dataset, model, seed
        self.info = data_mod.info(dataset)
        bundle = pipeline.dataset(dataset)
        self.x, self.y = bundle.test.images(), bundle.test.y
        self.split = split_at_last_conv_block(model.module)
        check_split(self.split, self.x[:1])

    @property
    def arch(self) -> str:
        return self.model.spec["arch"]

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def eps(self) -> float:
        """The L-inf radius of FGSM, BIM, PGD and the confined NRF (the dataset's threat model)."""
        return self.info.eps

    def _fields(self, **extra) -> dict:
        return {"model": self.model.key, "dataset": self.dataset, "test_n": self.pipeline.budget.test_images(self.dataset),
                "seed": self.seed, **extra}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Z = encode(x), at the split point of split_at_last_conv_block."""
        return encode_all(self.split, x, batch_size=self.pipeline.budget.eval_batch)

    def masks(self, on: str = "clean", *, beta: float = BETA, labels: str = "true") -> ChannelMasks:
        """Masks fitted on the clean test images (``on="clean"``) or on an attack's adversarial
        images (``on=<attack name>``). ``labels="true"``: with the true labels, as the authors' find_features
        does (each test image's own label then shapes the masks it is scored with); ``labels="predicted"``:
        with the model's predictions on those images, which use no label (the sensitivity mask_labels of IB-2,
        IB-3, IB-5 and IB-6). The two differ only on images whose prediction is not their label (see the module
        docstring). Off the CPU the fit is fit_channel_masks' vectorised path (noise drawn on the device), keyed by
        fit_fields; a CPU fit's key has no such field."""
        if labels not in MASK_LABELS:
            raise ValueError(f"labels must be one of {MASK_LABELS}, got {labels!r}")
        device = self.pipeline.device
        fields = self._fields(on=on, beta=beta, fit_batch=FIT_BATCH, labels=labels, **fit_fields(device))

        def make():
            x = self.x if on == "clean" else self.attack(on).x_adv
            z = self.features(x)
            y = self.y if labels == "true" else predictions_of_channels(
                self.split, z, torch.ones(z.shape[:2], device=z.device))
            masks = fit_channel_masks(self.split, z, y, beta=beta, seed=self.seed, vectorised=vectorised_on(device),
                                      steps=self.pipeline.budget.iterations(MASK_STEPS))
            return masks.as_payload(), {"robust_channels": masks.robust.sum(1).float().mean().item()}

        masks = ChannelMasks.from_payload(self.pipeline.cached("ib_masks", fields, make).payload)
        return replace(masks, robust=masks.robust.to(self.pipeline.device))

    def attack(self, name: str, *, mask_labels: str = "true") -> AdversarialSet:
        """The adversarial test images of one of ATTACKS on this model. ``mask_labels`` says which clean masks an
        NRF-kind attack uses (``masks(labels=...)``); the other attacks use none and ignore it."""
        mask_labels = self._mask_labels(name, mask_labels)
        params = attack_params(name, self.info.eps, self.pipeline.budget.iterations)
        fields = self._fields(attack=name, params=params, mask_labels=mask_labels)
        entry = self.pipeline.cached("ib_adversarial", fields, lambda: self._run(name, params, mask_labels))
        return AdversarialSet(name, params, self.model.label, self.x, entry.payload["x_adv"].to(self.pipeline.device),
                              self.y, entry.provenance["spec"])

    @staticmethod
    def _mask_labels(name: str, mask_labels: str) -> str:
        if mask_labels not in MASK_LABELS:
            raise ValueError(f"mask_labels must be one of {MASK_LABELS}, got {mask_labels!r}")
        return mask_labels if ATTACKS[name][0] == "nrf" else "true"

    def _nrf(self, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, params: dict) -> torch.Tensor:
        return torch.cat([
            nrf(self.model.module, x[i:i + ATTACK_BATCH], y[i:i + ATTACK_BATCH], mask=masks[i:i + ATTACK_BATCH],
                encode=self.split.encode, tail=self.split.tail, **params)
            for i in range(0, len(x), ATTACK_BATCH)]) if len(x) else x.clone()

    def _run(self, name: str, params: dict, mask_labels: str = "true") -> tuple[dict, dict]:
        kind = ATTACKS[name][0]
        net, x, y = self.model.module, self.x, self.y
        if kind == "fgsm":
            x_adv = attack_batched(fgsm, net, x, y, batch_size=self.pipeline.budget.eval_batch, **params)
        elif kind == "bim":
            x_adv = attack_batched(bim, net, x, y, batch_size=self.pipeline.budget.eval_batch, **params)
        elif kind == "pgd":
            x_adv = attack_batched(pgd, net, x, y, batch_size=self.pipeline.budget.eval_batch,
                                   generator=torch.Generator().manual_seed(self.seed), **params)
        elif kind == "cw":
            x_adv = attack_batched(cw_l2, net, x, y, batch_size=ATTACK_BATCH, **params)
        else:
            params = dict(params)
            channels = params.pop("channels")
            masks = self.masks("clean", labels=mask_labels).index(channels)
            if mask_labels == "true":
                x_adv = self._nrf(x, y, masks, params)
            else:  # the true-label attack's images, re-attacked where the mask can change the result
                differ, rows = relabelled_rows(self, channels)
                x_adv = self.attack(name).x_adv.clone()
                index = rows.nonzero().flatten().to(x.device)
                x_adv[index] = self._nrf(x[index], y[index], masks.to(x.device)[index], params)
                return {"x_adv": x_adv.cpu()}, {"images": len(y), "masks_differ": int(differ.sum()),
                                                "reattacked": int(rows.sum())}
        return {"x_adv": x_adv.cpu()}, {"images": len(y)}
