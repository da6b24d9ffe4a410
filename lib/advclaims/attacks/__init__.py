"""Adversarial attacks in pixel space [0, 1], as plain functions with keyword-only budgets.

Each attack runs the model in eval mode with frozen parameters (restored afterwards), never
modifies its inputs, and returns new detached tensors. One module per attack; its docstring names
the paper, the threat model, the defaults and the tensor shapes.
"""

from ._common import (NonFiniteLogits, check_attack_inputs, check_images, check_labels, frozen, input_gradient,
                      margin_loss, project_linf)
from .bim import bim
from .confined_deepfool import confined_deepfool
from .cw import cw_l2
from .deepfool import DeepFoolResult, deepfool
from .fgsm import fgsm
from .nrf import nrf
from .pgd import pgd
from .targeted_deepfool import targeted_deepfool
from .universal import fooling_rate, universal_perturbation

__all__ = [
    "fgsm", "pgd", "bim", "cw_l2", "deepfool", "DeepFoolResult", "confined_deepfool", "targeted_deepfool", "nrf",
    "universal_perturbation", "fooling_rate",
    "frozen", "input_gradient", "project_linf", "margin_loss", "NonFiniteLogits",
    "check_images", "check_labels", "check_attack_inputs",
]
