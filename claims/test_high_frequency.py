"""Claims of "High frequency patterns play a key role in the generation of adversarial examples".

Only the paper's abstract is public: every protocol below is OURS (docs/claims.md, section
high_frequency), built to test what the abstract states; expected/high_frequency.toml carries the
relation each test checks and a protocol_note the report prints.
"""

import pytest

from advclaims.analysis.high_frequency import (class_expectation_stability, feature_trajectories,
                                               frequency_split_success, target_spectrum_correlation)
from advclaims.plugin import on_datasets

pytestmark = pytest.mark.high_frequency

DATASETS = ("fashion_mnist", "mnist", "cifar10")


@pytest.mark.claim("HF-1")
@on_datasets(*DATASETS)
def test_class_feature_expectations_are_stable_at_every_stage(std_model, dataset, class_mean_split, repro_seed,
                                                              check):
    """Our protocol: per stage, each class's images scatter around their class mean (RMS) by no more than
    the distance from it to the nearest other class's mean (spread ratio <= 1 for every class; n-free)."""
    check(class_expectation_stability(std_model, class_mean_split.images(), class_mean_split.y,
                                      num_classes=dataset.info.num_classes, seed=repro_seed))


@pytest.mark.claim("HF-2")
@on_datasets(*DATASETS)
def test_targeted_adversarial_features_travel_from_the_source_class_to_the_target(
        std_model, dataset, std_targeted_pgd20_set, check):
    """Our protocol: targeted PGD-20 on STD; d(adv, mu_target) / d(adv, mu_source) falls with depth, and
    half way (Layer2) the attack has already moved the features toward the target's mean."""
    check(feature_trajectories(std_model, std_targeted_pgd20_set, num_classes=dataset.info.num_classes))


@pytest.mark.claim("HF-3")
@on_datasets(*DATASETS)
def test_the_high_frequency_part_of_a_perturbation_carries_the_attack(std_model, std_targeted_pgd20_set, check):
    """Our protocol: x + high_pass(delta, r) reaches the target far more often than x + low_pass(delta, r)
    on STD, at every radius from 1/8 to 3/8 of the image side."""
    check(frequency_split_success(std_model, std_targeted_pgd20_set))


@pytest.mark.claim("HF-4")
@on_datasets(*DATASETS)
def test_perturbation_high_frequencies_resemble_those_of_the_target_class(
        std_model, dataset, std_targeted_pgd20_set, check):
    """Our protocol: the high-band amplitude spectrum of a successful targeted perturbation correlates
    best with the target class's mean high-band spectrum more often than chance (p < 0.01)."""
    check(target_spectrum_correlation(std_model, std_targeted_pgd20_set, num_classes=dataset.info.num_classes))
