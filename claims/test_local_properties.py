"""Claims of "Dissecting local properties of adversarial examples" (ICLR 2022 submission).

Each test reads like its sentence in the paper; the relation it checks, the paper's figures
and the verdict expected per dataset and budget live in expected/local_properties.toml.
"""

import pytest

from advclaims.analysis.local_properties import (fgsm_versus_pgd, frequency_swap, high_pass_accuracy, low_pass_accuracy,
                                                 low_pass_accuracy_std_vs_adv, outcome_ratios_std_vs_adv,
                                                 perturbation_smoothness, response_differences_by_outcome,
                                                 response_differences_std_vs_adv, spectrum_differences,
                                                 transfer_response_differences)
from advclaims.analysis.local_properties import weight_decay_sweep as sweep_trends
from advclaims.plugin import on_datasets

pytestmark = pytest.mark.local_properties

DATASETS = ("fashion_mnist", "mnist", "cifar10", "svhn")


# LP-13 first: its weight-decay sweep of ADV models is the longest chain of training; under
# pytest-xdist the other worker meanwhile trains STD and ADV for the claims below.
@pytest.mark.claim("LP-13")
@on_datasets(*DATASETS)
def test_larger_weight_decay_gives_smaller_kernels_response_differences_and_robustness_gap(weight_decay_sweep, check):
    check(sweep_trends(weight_decay_sweep))


@pytest.mark.claim("LP-1")
@on_datasets(*DATASETS)
def test_low_passed_adversarial_examples_regain_accuracy_on_the_standard_model(std_model, std_pgd20_set, check):
    check(low_pass_accuracy(std_model, std_pgd20_set))


@pytest.mark.claim("LP-2")
@on_datasets(*DATASETS)
def test_low_pass_filtering_barely_changes_robust_accuracy_of_the_adversarially_trained_model(
        std_model, adv_model, std_pgd20_set, adv_pgd20_set, check):
    check(low_pass_accuracy_std_vs_adv(std_model, adv_model, std_set=std_pgd20_set, adv_set=adv_pgd20_set))


@pytest.mark.claim("LP-3")
@on_datasets(*DATASETS)
def test_high_frequencies_of_adversarial_examples_carry_their_destructiveness_on_the_standard_model(
        std_model, adv_model, std_pgd20_set, adv_pgd20_set, check):
    check(frequency_swap(std_model, std_pgd20_set, adv=adv_model, adv_set=adv_pgd20_set))


@pytest.mark.claim("LP-4")
@on_datasets(*DATASETS)
def test_adversarial_examples_add_high_frequency_amplitude_more_on_the_standard_model(
        std_pgd20_spectrum_set, adv_pgd20_spectrum_set, check):
    check(spectrum_differences(std_pgd20_spectrum_set, adv_pgd20_spectrum_set))


@pytest.mark.claim("LP-5")
@on_datasets(*DATASETS)
def test_only_natural_high_frequencies_help_the_standard_model(std_model, adv_model, std_pgd20_set, adv_pgd20_set,
                                                              check):
    check(high_pass_accuracy(std_model, adv_model, std_set=std_pgd20_set, adv_set=adv_pgd20_set))


@pytest.mark.claim("LP-6")
@on_datasets(*DATASETS)
def test_perturbations_are_locally_consistent_on_the_robust_model_and_disordered_on_the_standard_one(
        std_model, adv_model, std_pgd20_set, adv_pgd20_set, check):
    check(perturbation_smoothness(std_model, adv_model, std_set=std_pgd20_set, adv_set=adv_pgd20_set))


@pytest.mark.claim("LP-7")
@on_datasets(*DATASETS)
def test_fgsm_is_weaker_than_pgd20_on_the_adversarially_trained_model(adv_model, adv_fgsm_set, adv_pgd20_set, check):
    check(fgsm_versus_pgd(adv_model, fgsm_set=adv_fgsm_set, pgd_set=adv_pgd20_set))


@pytest.mark.claim("LP-8")
@on_datasets(*DATASETS)
def test_standard_models_show_larger_local_response_differences_than_robust_ones(
        std_model, adv_model, std_pgd20_set, adv_pgd20_set, check):
    check(response_differences_std_vs_adv(std_model, adv_model, std_set=std_pgd20_set, adv_set=adv_pgd20_set))


@pytest.mark.claim("LP-9")
@on_datasets(*DATASETS)
def test_successful_attacks_have_larger_layer4_response_differences_on_the_standard_model(
        std_model, std_fgsm_set, check):
    check(response_differences_by_outcome(std_model, std_fgsm_set))


@pytest.mark.claim("LP-10")
@on_datasets(*DATASETS)
def test_successful_and_failed_attacks_differ_less_on_the_robust_model(
        std_model, adv_model, std_fgsm_set, adv_pgd20_set, adv_fgsm_set, check):
    check(outcome_ratios_std_vs_adv(std_model, adv_model, std_fgsm_set=std_fgsm_set, adv_pgd_set=adv_pgd20_set,
                                    adv_fgsm_set=adv_fgsm_set))


@pytest.mark.claim("LP-11")
@on_datasets(*DATASETS)
def test_examples_transferred_from_the_standard_model_barely_move_the_robust_one(
        adv_model, adv_pgd20_set, std_pgd20_set, check):
    check(transfer_response_differences(adv_model, own_set=adv_pgd20_set, transferred_set=std_pgd20_set))


@pytest.mark.claim("LP-12")
@on_datasets(*DATASETS)
def test_examples_transferred_from_the_robust_model_move_the_standard_one_less_than_its_own(
        std_model, std_pgd20_set, adv_pgd20_set, check):
    check(transfer_response_differences(std_model, own_set=std_pgd20_set, transferred_set=adv_pgd20_set))
