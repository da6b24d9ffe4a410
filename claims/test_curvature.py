"""Claims of "With friends like these, who needs adversaries?" (Jetley, Lord & Torr, NeurIPS 2018).

Each test reads like its sentence in the paper; the relation it checks, the paper's figures and the verdict
expected per dataset and budget live in expected/curvature.toml. Models: LeNet on (Fashion-)MNIST, NiN on
CIFAR-10/100 (and ResNet-18 on CIFAR-10 at the paper budget), standard training.
"""

import pytest

from advclaims.analysis.curvature import (accuracy_in_curvature_subspaces, accuracy_in_svd_subspaces,
                                          additive_separability, class_departures, class_transitions,
                                          confined_deepfool_norms, downsampling_defence, flat_direction_effects,
                                          perturbation_fractions, principal_curvature_properties)
from advclaims.plugin import on_datasets

pytestmark = pytest.mark.curvature

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")


@pytest.mark.claim("CV-1")
@on_datasets(*DATASETS)
def test_algorithm_1_measures_a_symmetric_nonzero_curvature_operator(
        principal_curvatures, check):
    check(principal_curvature_properties(principal_curvatures))


@pytest.mark.claim("CV-2")
@on_datasets(*DATASETS)
def test_moving_along_the_most_positively_curved_direction_of_a_class_moves_images_into_it(
        positive_direction_scores, check):
    check(class_transitions(positive_direction_scores))


@pytest.mark.claim("CV-3")
@on_datasets(*DATASETS)
def test_moving_along_the_most_negatively_curved_direction_of_a_class_moves_its_images_out(
        negative_direction_scores, check):
    check(class_departures(negative_direction_scores))


@pytest.mark.claim("CV-4")
@on_datasets(*DATASETS)
def test_flat_directions_leave_predictions_and_scores_unchanged(
        flat_direction_scores, positive_direction_scores, check):
    check(flat_direction_effects(flat_direction_scores, positive_direction_scores))


@pytest.mark.claim("CV-5")
@on_datasets(*DATASETS)
def test_class_score_curves_along_a_direction_are_vertical_shifts_of_each_other(
        positive_direction_scores, negative_direction_scores, check):
    check(additive_separability(positive_direction_scores, negative_direction_scores))


@pytest.mark.claim("CV-6")
@on_datasets(*DATASETS)
def test_curved_subspaces_carry_the_accuracy_and_flat_ones_do_not(curvature_setup, principal_curvatures, check):
    check(accuracy_in_curvature_subspaces(curvature_setup, principal_curvatures))


@pytest.mark.claim("CV-7")
@on_datasets(*DATASETS)
def test_attacks_and_saliency_maps_live_in_the_curved_subspaces(
        curvature_setup, principal_curvatures, curvature_deepfool_set, check):
    check(perturbation_fractions(curvature_setup, principal_curvatures, curvature_deepfool_set))


@pytest.mark.claim("CV-8")
@on_datasets(*DATASETS)
def test_top_singular_vectors_of_deepfool_perturbations_carry_the_accuracy(curvature_setup, deepfool_svd_basis, check):
    check(accuracy_in_svd_subspaces(curvature_setup, deepfool_svd_basis))


@pytest.mark.claim("CV-9")
@on_datasets(*DATASETS)
def test_confined_deepfool_needs_less_norm_in_the_deepfool_subspace_and_where_images_have_more(
        curvature_setup, deepfool_svd_basis, check):
    check(confined_deepfool_norms(curvature_setup, deepfool_svd_basis))


@pytest.mark.claim("CV-10")
@on_datasets(*DATASETS)
def test_downsampling_costs_accuracy_and_the_defended_net_stays_attackable(
        curvature_setup, curvature_deepfool_set, check):
    check(downsampling_defence(curvature_setup, curvature_deepfool_set))
