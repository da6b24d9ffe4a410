"""Analyses of "With friends like these, who needs adversaries?" (Jetley, Lord & Torr, NeurIPS 2018): CV-1 .. CV-10.

- ``operator``: Algorithm 1 (the mean curvature operator at boundary points) and CV-1
- ``decomposition``: its eigendecomposition (dense, or block Lanczos with a search for flat directions)
- ``directions``: class scores along principal curvature directions, CV-2 .. CV-5
- ``subspaces``: curvature and DeepFool-SVD subspaces, CV-6 .. CV-9
- ``defence``: the down-sampling defence, CV-10
- ``figures``: the paper's Figs. 1-5 and Table 1 as PNG
"""

from advclaims.analysis.curvature.defence import downsampling_defence
from advclaims.analysis.curvature.directions import (additive_separability, class_departures, class_transitions,
                                                     flat_direction_effects)
from advclaims.analysis.curvature.operator import principal_curvature_properties
from advclaims.analysis.curvature.subspaces import (accuracy_in_curvature_subspaces, accuracy_in_svd_subspaces,
                                                    confined_deepfool_norms, perturbation_fractions)

__all__ = ["downsampling_defence", "additive_separability", "class_departures", "class_transitions",
           "flat_direction_effects", "principal_curvature_properties", "accuracy_in_curvature_subspaces",
           "accuracy_in_svd_subspaces", "confined_deepfool_norms", "perturbation_fractions"]
