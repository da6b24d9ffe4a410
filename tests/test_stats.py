"""Statistics: intervals cover what they should, the verdict rule is docs/claims.md's, tests are scipy's."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advclaims import stats
from advclaims.stats import Estimate, Verdict

finite = st.floats(-1e3, 1e3, allow_nan=False)
comparators = st.sampled_from(stats.COMPARATORS)


def test_bootstrap_interval_contains_the_point_value_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = stats.mean(rng.normal(1.0, 1.0, 50))
    large = stats.mean(rng.normal(1.0, 1.0, 2000))
    assert small.low <= small.value <= small.high
    assert (large.high - large.low) < (small.high - small.low) / 3


def test_bootstrap_interval_covers_the_true_mean_most_of_the_time():
    rng = np.random.default_rng(2)
    hits = sum(stats.mean(rng.exponential(2.0, 200), n_resamples=500, seed=i).low <= 2.0
               <= stats.mean(rng.exponential(2.0, 200), n_resamples=500, seed=i).high for i in range(40))
    assert hits >= 30  # nominal 95%; loose bound for 40 trials with two independent samples


def test_paired_difference_is_tighter_than_unpaired_for_correlated_samples():
    rng = np.random.default_rng(3)
    base = rng.normal(0, 5, 500)
    a, b = base + rng.normal(0.3, 0.1, 500), base
    paired = stats.mean_difference(a, b, paired=True)
    unpaired = stats.mean_difference(a, b, paired=False)
    assert paired.low > 0
    assert (paired.high - paired.low) < (unpaired.high - unpaired.low) / 5


def test_ratio_of_means_is_scale_free():
    rng = np.random.default_rng(4)
    a, b = rng.random(300) + 1, rng.random(300) + 0.5
    r1, r2 = stats.ratio_of_means(a, b), stats.ratio_of_means(10 * a, 10 * b)
    assert r1.value == pytest.approx(r2.value)
    assert r1.low == pytest.approx(r2.low, rel=1e-6)


def test_ratio_of_means_with_zero_denominator_is_unmeasurable():
    with pytest.raises(stats.Unmeasurable, match="denominator sample is all zeros"):
        stats.ratio_of_means(np.ones(5), np.zeros(5))


@pytest.mark.parametrize("n", [0, 1])
def test_a_sample_of_fewer_than_two_values_is_unmeasurable_in_one_line(n):
    with pytest.raises(stats.Unmeasurable) as err:
        stats.mean(np.ones(n))
    assert "\n" not in str(err.value) and "at least 2" in str(err.value)


def test_an_undefined_interval_stays_undefined_and_the_verdict_inconclusive():
    # a ratio over 3 images where some resamples have a zero denominator: the interval is not finite;
    # it used to become value-value (0.94 [0.94, 0.94]), a maximally certain verdict
    e = stats.ratio_of_means(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 6.4]), paired=False)
    assert math.isfinite(e.value) and not e.finite
    assert stats.verdict(e, ">", 0.5) is Verdict.INCONCLUSIVE and stats.verdict(e, "<", 5) is Verdict.INCONCLUSIVE


def test_degenerate_samples_give_a_zero_width_interval():
    e = stats.mean(np.full(20, 0.7))
    assert e.low == e.value == e.high == pytest.approx(0.7)


def test_nan_in_a_sample_is_rejected_with_a_message():
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.mean(np.array([1.0, np.nan, 2.0]))


def test_hypothesis_tests_match_scipy_on_clear_effects():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    assert stats.mann_whitney(a, b, alternative="greater").pvalue < 1e-6
    assert stats.wilcoxon(a, b, alternative="greater").pvalue < 1e-6
    assert stats.spearman(np.arange(20), np.arange(20) ** 2).statistic == pytest.approx(1.0)
    assert stats.binomial(60, 100, 0.1).pvalue < 1e-10
    assert stats.binomial(10, 100, 0.1).pvalue > 0.4


@given(value=finite, half=st.floats(0, 100), threshold=finite, comparator=comparators)
@settings(deadline=None)
def test_verdict_follows_the_interval_rule(value, half, threshold, comparator):
    e = Estimate(value, value - half, value + half, 10)
    v = stats.verdict(e, comparator, threshold)
    above, below = e.low > threshold, e.high < threshold
    if comparator in (">", ">="):
        expected = (Verdict.REPRODUCED if (above or (comparator == ">=" and e.low >= threshold))
                    else Verdict.CONTRADICTED if below else Verdict.INCONCLUSIVE)
    else:
        expected = (Verdict.REPRODUCED if (below or (comparator == "<=" and e.high <= threshold))
                    else Verdict.CONTRADICTED if above else Verdict.INCONCLUSIVE)
    assert v is expected


@given(value=finite, half=st.floats(0.001, 100), threshold=finite)
@settings(deadline=None)
def test_opposite_comparators_never_both_reproduce(value, half, threshold):
    e = Estimate(value, value - half, value + half, 10)
    assert not (stats.verdict(e, ">", threshold) is Verdict.REPRODUCED
                and stats.verdict(e, "<", threshold) is Verdict.REPRODUCED)


@given(st.lists(st.sampled_from(list(Verdict)), min_size=1, max_size=8))
def test_a_claim_is_reproduced_only_when_every_check_is(verdicts):
    combined = stats.combine(verdicts)
    if Verdict.CONTRADICTED in verdicts:
        assert combined is Verdict.CONTRADICTED
    elif all(v is Verdict.REPRODUCED for v in verdicts):
        assert combined is Verdict.REPRODUCED
    else:
        assert combined is Verdict.INCONCLUSIVE


def test_unknown_comparator_is_an_error():
    with pytest.raises(ValueError, match="comparator"):
        stats.verdict(Estimate(1, 0, 2, 3), "!=", 0)


def test_non_finite_estimate_is_inconclusive_never_reproduced():
    assert stats.verdict(Estimate(float("nan"), 0, 1, 3), ">", -1) is Verdict.INCONCLUSIVE


def test_a_bootstrap_over_many_values_holds_a_bounded_batch_and_batching_changes_no_number(monkeypatch):
    """LP-13 bootstraps over every kernel of the model: about 1.2 million at the paper width, where one
    (resamples x n) index matrix took 19 GiB and the preflight's worker was killed for memory."""
    import tracemalloc
    x = np.random.default_rng(3).normal(size=3000)
    whole = stats.bootstrap(lambda a, axis=-1: a.mean(axis), x, method="BCa")
    monkeypatch.setattr(stats, "BOOTSTRAP_BATCH_VALUES", 7000)   # two resamples per batch
    batched = stats.bootstrap(lambda a, axis=-1: a.mean(axis), x, method="BCa")
    assert (batched.low, batched.high) == (whole.low, whole.high)
    assert np.array_equal(batched.replicates, whole.replicates)

    monkeypatch.setattr(stats, "BOOTSTRAP_BATCH_VALUES", 2 ** 20)
    big = np.random.default_rng(4).normal(size=200_000)          # unbatched: 500 x 200,000 indices = 800 MB
    tracemalloc.start()
    est = stats.bootstrap(lambda a, axis=-1: a.mean(axis), big, n_resamples=500, method="percentile")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MiB"
    assert est.low < big.mean() < est.high
