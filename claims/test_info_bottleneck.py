"""Claims of "Distilling robust and non-robust features in adversarial examples by information
bottleneck" (Kim, Lee & Ro, NeurIPS 2021).

Every claim runs on the paper's two adversarially trained architectures, VGG-16 and WRN-28-10
(``ib_model``, parametrised: node ids name the architecture); at the smoke budget on a CPU the
WRN-28-10 instances skip (fixtures/info_bottleneck.py says why). The relation each test checks, the
paper's figures and the verdicts expected per dataset and budget are in expected/info_bottleneck.toml.
"""

import pytest

from advclaims.analysis.info_bottleneck import (gradient_norm_ablation, non_robust_features_carry_the_adversarial_label,
                                                nrf_versus_standard_attacks, robust_and_non_robust_split,
                                                robust_channels_versus_beta, robust_features_under_attacks)
from advclaims.plugin import on_datasets

pytestmark = pytest.mark.info_bottleneck

DATASETS = ("fashion_mnist", "cifar10", "svhn", "tiny_imagenet")
on_architectures = pytest.mark.parametrize(
    "ib_model", [pytest.param("vgg16_bn", id="vgg16"), pytest.param("wrn28_10", id="wrn28_10")], indirect=True)


@pytest.mark.claim("IB-1")
@on_architectures
@on_datasets(*DATASETS)
def test_the_bottleneck_splits_each_image_reproducibly_into_robust_and_non_robust_parts(ib_suite, check):
    check(robust_and_non_robust_split(ib_suite))


@pytest.mark.claim("IB-2")
@on_architectures
@on_datasets(*DATASETS)
def test_robust_features_keep_their_accuracy_under_attack(ib_suite, check):
    check(robust_features_under_attacks(ib_suite))


@pytest.mark.claim("IB-3")
@on_architectures
@on_datasets(*DATASETS)
def test_non_robust_features_predict_the_adversarial_label(ib_suite, check):
    check(non_robust_features_carry_the_adversarial_label(ib_suite))


@pytest.mark.claim("IB-4")
@on_architectures
@on_datasets(*DATASETS)
def test_fewer_channels_are_robust_as_beta_grows(ib_suite, check):
    check(robust_channels_versus_beta(ib_suite))


@pytest.mark.claim("IB-5")
@on_architectures
@on_datasets(*DATASETS)
def test_nrf_is_stronger_than_standard_attacks(ib_suite, check):
    check(nrf_versus_standard_attacks(ib_suite))


@pytest.mark.claim("IB-6")
@on_architectures
@on_datasets(*DATASETS)
def test_amplifying_non_robust_gradients_breaks_the_model_most(ib_suite, check):
    check(gradient_norm_ablation(ib_suite))
