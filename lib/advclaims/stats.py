"""The statistics a claim goes through, under their public name: ``advclaims.stats.bootstrap(statistic, *samples)``,
``advclaims.stats.pool(estimates)``, ``mean``, ``mean_difference``, ``ratio_of_means``, ``trend``, ``exact`` and the
hypothesis tests. They live in ``advclaims.verdict.stats`` (docs/statistics.md); this face keeps the name a
notebook or a claim of your own imports stable."""

from advclaims.verdict.estimate import CONFIDENCE, MODELS, RECIPE, Estimate, TestResult, Unmeasurable, Verdict  # noqa: F401
from advclaims.verdict.stats import (binomial, bootstrap, combine, contradiction_level, exact, mann_whitney,  # noqa: F401
                                     mean, mean_difference, pool, ratio_of_means, spearman, spearman_rho, trend, verdict,
                                     wilcoxon)
