"""Claims of "Dissecting local properties of adversarial examples" (ICLR 2022 submission).

Each test reads like its sentence in the paper; the relation it checks, the paper's figures
and the verdict expected per dataset and budget live in expected/local_properties.toml.
"""

import pytest

from advclaims.analysis.local_properties import fgsm_versus_pgd, response_differences_std_vs_adv
from advclaims.plugin import on_datasets

pytestmark = pytest.mark.local_properties

DATASETS = ("fashion_mnist", "mnist", "cifar10", "svhn")


@pytest.mark.claim("LP-7")
@on_datasets(*DATASETS)
def test_fgsm_is_weaker_than_pgd20_on_the_adversarially_trained_model(adv_model, adv_fgsm_set, adv_pgd20_set, check):
    check(fgsm_versus_pgd(adv_model, fgsm_set=adv_fgsm_set, pgd_set=adv_pgd20_set))


@pytest.mark.claim("LP-8")
@on_datasets(*DATASETS)
def test_standard_models_show_larger_local_response_differences_than_robust_ones(
        std_model, adv_model, std_pgd20_set, adv_pgd20_set, check):
    check(response_differences_std_vs_adv(std_model, adv_model, std_set=std_pgd20_set, adv_set=adv_pgd20_set))
