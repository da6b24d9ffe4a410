"""Statistics: intervals cover what they should, the verdict rule is docs/claims.md's, tests are scipy's."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advclaims.verdict import stats
from advclaims.verdict.stats import Estimate, Verdict

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


def test_degenerate_samples_give_a_zero_width_interval_that_never_decides():
    e = stats.mean(np.full(20, 0.7))
    assert e.low == e.value == e.high == pytest.approx(0.7)
    assert e.degenerate and stats.verdict(e, ">", 0.5) is Verdict.INCONCLUSIVE


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
    if e.low == e.high:  # a zero-width interval of a statistic that is not exact never decides
        expected = Verdict.INCONCLUSIVE
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


# --- issue 21: degenerate intervals, multiplicity, crossed pooling, trends over models -----------------------------

def test_a_zero_width_interval_of_a_statistic_that_is_not_exact_never_decides():
    x = np.random.default_rng(6).normal(size=100)
    same = stats.mean_difference(x, x)                     # every resample gives 0: [0, 0]
    const = stats.ratio_of_means(np.full(40, 2.0), np.full(40, 1.0))
    for e in (same, const):
        assert e.low == e.high and e.degenerate.startswith("every resample gives the same value")
        assert not e.uninformative  # not saturated: it blocks reproduction instead of being set aside
        assert stats.verdict(e, ">=", 0) is Verdict.INCONCLUSIVE and stats.verdict(e, "<", 10) is Verdict.INCONCLUSIVE
    exact = stats.exact(3, 10)
    assert not exact.degenerate and stats.verdict(exact, ">", 2) is Verdict.REPRODUCED


def test_a_claim_with_a_degenerate_check_is_not_reproduced_by_its_other_checks():
    from advclaims.verdict.expected import CheckSpec
    from advclaims.verdict.records import _check_record, _combined
    x = np.random.default_rng(7).normal(size=100)
    spec = lambda name: CheckSpec(statistic=name, description=name, comparator=">", threshold=0.0, basis="protocol",
                                  basis_note="test")
    good = _check_record(spec("good"), stats.mean(x + 3), "T-1", m=2)
    zero = _check_record(spec("zero"), stats.mean_difference(x, x), "T-1", m=2)
    assert good["verdict"] == "reproduced" and zero["verdict"] == "inconclusive" and zero["degenerate"]
    assert _combined([good, zero]) == "inconclusive"
    saturated = _check_record(spec("sat"), stats.mean(np.full(50, 0.5)), "T-1", m=2)
    assert saturated["verdict"] == "uninformative" and _combined([good, saturated]) == "reproduced"


def test_paired_0_1_outcomes_equal_on_every_image_get_an_exact_binomial_bound():
    same = np.r_[np.ones(60), np.zeros(40)]
    e = stats.mean_difference(same, same)
    u = 1 - 0.025 ** (1 / 100)                             # Clopper-Pearson upper bound for 0 of 100
    assert e.value == 0 and math.isclose(e.high, u, rel_tol=1e-9) and math.isclose(e.low, -u, rel_tol=1e-9)
    assert not e.degenerate and stats.verdict(e, "<=", 0.05) is Verdict.REPRODUCED
    assert stats.verdict(e, ">", 0) is Verdict.INCONCLUSIVE
    flipped = stats.mean_difference(np.ones(100), np.zeros(100))   # every image right on a, wrong on b
    assert flipped.value == 1 and math.isclose(flipped.low, 1 - 2 * u, rel_tol=1e-9) and flipped.high == 1
    lo, hi = flipped.interval(0.99)
    assert lo < flipped.low and hi == 1


def test_the_interval_at_another_level_reruns_the_same_bootstrap():
    x = np.random.default_rng(7).normal(0.1, 1, 300)
    e = stats.mean(x)
    wide = stats.mean(x, confidence=1 - 0.05 / 13)        # the same resamples at 99.6%
    assert e.interval(1 - 0.05 / 13) == pytest.approx((wide.low, wide.high))
    assert wide.low < e.low and e.high < wide.high
    assert e.interval(0.95) == (e.low, e.high)


def test_contradiction_needs_the_bonferroni_interval_reproduction_the_nominal_one():
    rng = np.random.default_rng(8)
    e = stats.mean(rng.normal(0, 1, 400), seed=1)
    threshold = e.high + 1e-3 * (e.high - e.low)          # the nominal interval lies just below it
    assert stats.verdict(e, ">", threshold) is Verdict.CONTRADICTED       # one check: nominal level
    assert stats.verdict(e, ">", threshold, m=13) is Verdict.INCONCLUSIVE  # 13 checks: 99.6% reaches it
    assert stats.verdict(e, "<", threshold, m=13) is Verdict.REPRODUCED    # reproduction stays nominal
    far = e.high + 10 * (e.high - e.low)
    assert stats.verdict(e, ">", far, m=13) is Verdict.CONTRADICTED
    assert stats.contradiction_level(13) == pytest.approx(1 - 0.05 / 13)


def test_an_estimate_without_a_recipe_for_other_levels_widens_by_the_normal_quantiles():
    e = Estimate(1.0, 0.0, 2.0, 10)
    lo, hi = e.interval(0.99)
    assert hi - 1 == pytest.approx(2.5758 / 1.9600, rel=1e-3) and 1 - lo == pytest.approx(hi - 1)


def _seeds(k, rng, shift=1.0, seed=0):
    v = rng.normal(0, 0.5, 150)
    return [stats.mean(shift * s + v + rng.normal(0, 1, 150), seed=seed, n_resamples=500) for s in range(k)]


def test_pool_of_crossed_seeds_gives_both_scopes_and_counts_images_not_seed_images():
    per_seed = _seeds(3, np.random.default_rng(9))
    pooled = stats.pool(per_seed)
    models = pooled.at_scope(stats.MODELS)
    assert pooled.scope == stats.RECIPE and models.scope == stats.MODELS and models.other.scope == stats.RECIPE
    assert pooled.n == models.n == 150 and len(pooled.per_seed) == 3
    assert pooled.value == pytest.approx(np.mean([e.value for e in per_seed]))
    assert "aligned image resamples" in pooled.method and "training seeds (3)" in pooled.covers
    # the seeds differ by 1 each: the recipe interval carries that, the models one only the images
    assert (models.high - models.low) < (pooled.high - pooled.low) / 3
    s2 = np.var([e.value for e in per_seed], ddof=1)
    v_img = np.var(np.mean([e.replicates for e in per_seed], axis=0), ddof=1)
    half = stats.sps.t.ppf(0.975, 2) * np.sqrt(s2 / 3 + v_img)
    assert (pooled.low, pooled.high) == pytest.approx((pooled.value - half, pooled.value + half))
    lo, hi = pooled.interval(0.99)
    assert hi - pooled.value == pytest.approx(stats.sps.t.ppf(0.995, 2) * np.sqrt(s2 / 3 + v_img))
    assert stats.pool(per_seed[:1]) is per_seed[0]


def test_pool_of_misaligned_resamples_uses_the_fully_correlated_bound_and_says_so():
    rng = np.random.default_rng(10)
    per_seed = [e for s, e in enumerate(_seeds(2, rng))]
    other = stats.mean(rng.normal(0, 1, 150), seed=5, n_resamples=500)   # another generator seed
    pooled = stats.pool([per_seed[0], other])
    assert "fully-correlated bound" in pooled.method
    sd = np.mean([np.std(e.replicates, ddof=1) for e in (per_seed[0], other)])
    models = pooled.at_scope(stats.MODELS)
    assert models.high - models.value == pytest.approx(1.96 * sd, rel=1e-3)


def test_pool_flags_a_statistic_degenerate_on_any_seed():
    x = np.random.default_rng(11).normal(size=50)
    pooled = stats.pool([stats.mean_difference(x, x), stats.mean_difference(x + 1, x)])
    assert pooled.degenerate.startswith("on 1 of 2 seeds")


def test_trend_over_four_models_in_perfect_order_has_exact_p_one_in_24():
    t = stats.trend([0.9, 0.7, 0.4, 0.1], [1e-4, 5e-4, 1e-3, 5e-3], alternative="less")
    assert t.value == pytest.approx(-1.0) and t.n == 4
    assert t.pvalues["less"] == pytest.approx(1 / 24) and t.pvalues["greater"] == pytest.approx(1.0)
    assert t.test == "exact permutation test over 4 models"
    assert stats.verdict(t, "<", 0) is Verdict.REPRODUCED
    assert stats.verdict(t, ">", 0) is Verdict.CONTRADICTED                    # one check: p 1/24 < 0.05
    assert stats.verdict(t, ">", 0, m=2) is Verdict.INCONCLUSIVE              # two: 1/24 > 0.025
    with pytest.raises(ValueError, match="threshold must be 0"):
        stats.verdict(t, "<", 0.5)


def test_trend_p_values_match_a_brute_force_permutation_count():
    import itertools
    rng = np.random.default_rng(12)
    v, o = rng.normal(size=6), np.arange(6)
    t = stats.trend(v, o, alternative="greater")
    rhos = np.array([stats.sps.spearmanr(p, o).statistic for p in itertools.permutations(v)])
    assert t.pvalues["greater"] == pytest.approx(np.mean(rhos >= t.value - 1e-9))
    assert t.pvalues["less"] == pytest.approx(np.mean(rhos <= t.value + 1e-9))
    assert t.value == pytest.approx(stats.sps.spearmanr(v, o).statistic)


def test_trend_of_too_few_or_constant_models():
    with pytest.raises(stats.Unmeasurable, match="at least 3"):
        stats.trend([1, 2], [1, 2], alternative="greater")
    flat = stats.trend([1, 1, 1, 1], [1, 2, 3, 4], alternative="greater")
    assert flat.degenerate and stats.verdict(flat, ">", 0) is Verdict.INCONCLUSIVE


def test_pooled_trends_are_pages_l_over_the_seeds_x_models_table():
    orders = [1e-4, 5e-4, 1e-3, 5e-3]
    rows = [[0.9, 0.7, 0.4, 0.1], [0.8, 0.75, 0.5, 0.2], [0.7, 0.8, 0.3, 0.1]]
    # the second seed lists its models in another order: pooling matches them by order
    per_seed = [stats.trend(rows[0], orders, alternative="less"),
                stats.trend(rows[1][::-1], orders[::-1], alternative="less"),
                stats.trend(rows[2], orders, alternative="less")]
    pooled = stats.pool(per_seed)
    page = stats.sps.page_trend_test(np.array(rows)[:, ::-1], method="exact")
    assert pooled.pvalues["less"] == pytest.approx(page.pvalue) and pooled.pvalues["less"] < 1 / 24
    assert pooled.value == pytest.approx(np.mean([e.value for e in per_seed]))
    assert pooled.test.startswith("Page's L trend test over 4 models x 3 seeds")
    assert stats.verdict(pooled, "<", 0, m=3) is Verdict.REPRODUCED
    with pytest.raises(ValueError, match="same models"):
        stats.pool([per_seed[0], stats.trend([1, 2, 3], [1, 2, 3], alternative="less")])


def test_each_budget_has_its_seeds_and_deciding_scope():
    from advclaims import budgets
    assert [(b.seeds, b.scope) for b in map(budgets.get, budgets.NAMES)] == [
        ((0,), "models"), ((0, 1, 2), "recipe"), ((0, 1, 2, 3, 4), "recipe")]
    assert budgets.get("paper").deciding_scope(5) == ("recipe", None)
    assert budgets.get("paper").deciding_scope(1)[0] == "models"
    assert budgets.get("fast").deciding_scope(3, external=True)[0] == "models"
    assert budgets.get("smoke").deciding_scope(3) == ("models", None)


def test_pool_of_exact_statistics_that_differ_keeps_the_models_scope_exact():
    per_seed = [stats.exact(v, 10) for v in (0.2, 0.4, 0.3)]
    pooled = stats.pool(per_seed)
    models = pooled.at_scope(stats.MODELS)
    assert models.method == "exact" and models.value == pytest.approx(0.3) and not models.degenerate
    half = stats.sps.t.ppf(0.975, 2) * np.std([0.2, 0.4, 0.3], ddof=1) / np.sqrt(3)
    assert pooled.scope == stats.RECIPE and (pooled.low, pooled.high) == pytest.approx((0.3 - half, 0.3 + half))
    assert stats.verdict(models, ">", 0.25) is Verdict.REPRODUCED
