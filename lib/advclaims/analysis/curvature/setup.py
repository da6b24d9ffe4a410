"""What the curvature claims share: the ``Setup`` (model, test images, SVD images, mean image, the budget's sizes,
the threat radius) and DeepFool sets of images, with the authors' iteration counts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advclaims.attacks import deepfool
from advclaims.budgets import CurvatureSizes

DEEPFOOL_ITER = 50     # the curvature claims' DeepFool (the authors' defaults: overshoot 0.02, at most 50 steps)
CONFINED_ITER = 100    # confined DeepFool's iterations (the authors')


@dataclass
class Setup:
    """What the curvature claims share: the model, the test images, training images for DeepFool SVDs, the
    training-set mean image, the budget's sizes and the threat radius (for FGSM and universal perturbations)."""

    model: object                # advclaims.checkpoints.pipeline.TrainedModel
    test_x: torch.Tensor
    test_y: torch.Tensor
    svd_x: torch.Tensor
    mean_image: torch.Tensor
    settings: CurvatureSizes
    eps: float
    seed: int = 0                # the training seed; the method's random draws follow it

    @property
    def net(self) -> nn.Module:
        return self.model.module

    @property
    def label(self) -> str:
        return f"{self.model.label} {self.model.spec['arch']}"


@dataclass
class DeepFoolSet:
    """DeepFool (the paper's defaults: overshoot 0.02, at most 50 steps) on a set of images."""

    perturbation: torch.Tensor   # x_adv - x, (N, C, H, W)
    success: torch.Tensor        # bool (N,)


def deepfool_set(model: nn.Module, x: torch.Tensor, *, batch: int = 500, max_iter: int = DEEPFOOL_ITER) -> DeepFoolSet:
    res = [deepfool(model, x[i:i + batch], max_iter=max_iter) for i in range(0, len(x), batch)]
    return DeepFoolSet(torch.cat([r.x_adv for r in res]) - x, torch.cat([r.success for r in res]))
