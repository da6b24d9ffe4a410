"""Adversarial attacks in pixel space [0, 1], as plain functions with keyword-only budgets.

Each attack runs the model in eval mode with frozen parameters (restored afterwards), never
modifies its inputs, and returns new detached tensors. One module per attack; its docstring names
the paper, the threat model, the defaults and the tensor shapes.
"""

from advclaims.attacks._common import (NonFiniteLogits, check_attack_inputs, check_images, check_labels,
                                       cross_entropy_loss, frozen, input_gradient, margin_loss, project_linf)
from advclaims.attacks.bim import bim
from advclaims.attacks.confined_deepfool import confined_deepfool
from advclaims.attacks.cw import cw_l2
from advclaims.attacks.deepfool import DeepFoolResult, deepfool
from advclaims.attacks.fgsm import fgsm
from advclaims.attacks.nrf import nrf
from advclaims.attacks.pgd import pgd
from advclaims.attacks.targeted_deepfool import targeted_deepfool
from advclaims.attacks.universal import fooling_rate, universal_perturbation

__all__ = [
    "fgsm", "pgd", "bim", "cw_l2", "deepfool", "DeepFoolResult", "confined_deepfool", "targeted_deepfool", "nrf",
    "universal_perturbation", "fooling_rate",
    "frozen", "input_gradient", "project_linf", "margin_loss", "cross_entropy_loss", "NonFiniteLogits",
    "check_images", "check_labels", "check_attack_inputs",
]
