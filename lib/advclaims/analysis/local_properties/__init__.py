"""Analyses of "Dissecting local properties of adversarial examples" (ICLR 2022 submission): LP-1 .. LP-13.

- ``spectra``: frequency claims LP-1 .. LP-5 (low- and high-passed images, frequency swaps, amplitude spectra)
- ``smoothness``: LP-6 (locally consistent perturbations)
- ``layers``: LP-7 .. LP-13 (FGSM vs PGD, local response differences per ResNet-18 stage, weight decay)
- ``figures``: the paper's Figs. 1-3, 5, 6, 9 and Tables 1-5 as PNG
"""

from advclaims.analysis.local_properties.layers import (fgsm_versus_pgd, outcome_ratios_std_vs_adv,
                                                        response_differences_by_outcome,
                                                        response_differences_std_vs_adv, transfer_response_differences,
                                                        weight_decay_sweep)
from advclaims.analysis.local_properties.smoothness import perturbation_smoothness
from advclaims.analysis.local_properties.spectra import (frequency_swap, high_pass_accuracy, low_pass_accuracy,
                                                         low_pass_accuracy_std_vs_adv, spectrum_differences)

__all__ = ["fgsm_versus_pgd", "outcome_ratios_std_vs_adv", "response_differences_by_outcome",
           "response_differences_std_vs_adv", "transfer_response_differences", "weight_decay_sweep",
           "perturbation_smoothness", "frequency_swap", "high_pass_accuracy", "low_pass_accuracy",
           "low_pass_accuracy_std_vs_adv", "spectrum_differences"]
