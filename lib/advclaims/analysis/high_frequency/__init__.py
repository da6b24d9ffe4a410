"""Analyses of "High frequency patterns play a key role in the generation of adversarial examples": HF-1 .. HF-4.

Only the paper's abstract is public, so every protocol here is ours, built to test what the abstract states.

- ``targeted``: the targeted PGD-20 set HF-2 .. HF-4 share, stage features, class means
- ``expectations``: HF-1 (class-wise feature expectations are stable at each layer)
- ``trajectories``: HF-2 (adversarial features travel from the source class toward the target)
- ``spectra``: HF-3 (the attack lives in the high frequencies) and HF-4 (they resemble the target class's)
- ``figures``: the claims' figures
"""

from advclaims.analysis.high_frequency.expectations import class_expectation_stability
from advclaims.analysis.high_frequency.spectra import frequency_split_success, target_spectrum_correlation
from advclaims.analysis.high_frequency.targeted import TargetedSet, targeted_pgd_set
from advclaims.analysis.high_frequency.trajectories import feature_trajectories

__all__ = ["class_expectation_stability", "frequency_split_success", "target_spectrum_correlation", "TargetedSet",
           "targeted_pgd_set", "feature_trajectories"]
