"""Analyses of "Distilling robust and non-robust features in adversarial examples by information bottleneck"
(Kim, Lee & Ro, NeurIPS 2021): IB-1 .. IB-6.

- ``bottleneck``: the information bottleneck on the last convolutional block (split point, fitting, masks)
- ``suite``: one adversarially trained model's test images, channel masks and attacks (stored)
- ``features``: IB-1 .. IB-4 (the split, robust features under attack, non-robust features and the adversarial
  label, robust channels versus beta)
- ``nrf``: IB-5 and IB-6 (the NRF attack against the standard ones, the gradient-norm ablation)
- ``figures``: Table 1, Fig. 5, Tables 3-4 as PNG
"""

from advclaims.analysis.info_bottleneck.features import (non_robust_features_carry_the_adversarial_label,
                                                         robust_and_non_robust_split, robust_channels_versus_beta,
                                                         robust_features_under_attacks)
from advclaims.analysis.info_bottleneck.nrf import gradient_norm_ablation, nrf_versus_standard_attacks
from advclaims.analysis.info_bottleneck.suite import EvaluationSuite

__all__ = ["non_robust_features_carry_the_adversarial_label", "robust_and_non_robust_split",
           "robust_channels_versus_beta", "robust_features_under_attacks", "gradient_norm_ablation",
           "nrf_versus_standard_attacks", "EvaluationSuite"]
