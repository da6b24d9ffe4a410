"""The pytest plugin, driven through pytester: markers, verdicts, outcomes, report, compare."""

import json
import textwrap

import pytest
import torch


CLAIMS = textwrap.dedent('''
    import numpy as np
    import pytest
    from advclaims.verdict import stats
    from advclaims.verdict.measurement import Measurement
    from advclaims.plugin import on_datasets

    @pytest.fixture
    def dataset(request):
        return request.param

    def measured(shift):
        a = np.random.default_rng(0).normal(shift, 0.1, 200)
        return Measurement(statistics={"diff": stats.mean(a)}, n=200)

    @pytest.mark.claim("LP-7")
    @on_datasets("fashion_mnist", "cifar10")
    def test_holds(dataset, check):
        check(measured(1.0))

    @pytest.mark.claim("LP-8")
    @on_datasets("fashion_mnist")
    def test_known_finding(dataset, check):
        check(measured(-1.0))
''')


@pytest.fixture
def expected_text(claim_toml) -> str:
    """LP-7 (no record: reproduced expected) and LP-8 (a recorded contradiction at fashion_mnist.smoke)."""
    return claim_toml("LP-7", title="t7") + claim_toml(
        "LP-8", title="t8", expect={"fashion_mnist.smoke": {"verdict": "contradicted", "reason": "a recorded finding"}})


@pytest.fixture
def project(claim_project, expected_text):
    return claim_project(expected_text, test_claims=CLAIMS)


def test_verdicts_become_outcomes_and_a_report(project, tmp_path):
    result = project.runpytest("--repro-report", str(tmp_path / "r"))
    result.assert_outcomes(passed=2, xfailed=1)
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    outcomes = {(c["claim"], c["dataset"]): c["outcome"] for c in data["claims"]}
    assert outcomes == {("LP-7", "fashion_mnist"): "passed", ("LP-7", "cifar10"): "passed",
                        ("LP-8", "fashion_mnist"): "known finding"}
    result.stdout.fnmatch_lines(["*advclaims: claims*", "LP-7*cifar10*reproduced*passed*"])


def test_dataset_markers_select_exactly_their_instances(project):
    result = project.runpytest("-m", "cifar10")
    result.assert_outcomes(passed=1, deselected=2)


def test_a_claim_id_selects_its_instances_with_k(project):
    project.runpytest("-k", "LP-8").assert_outcomes(xfailed=1, deselected=2)
    project.runpytest("-k", "LP-7 and cifar10").assert_outcomes(passed=1, deselected=2)


def test_an_unexpected_verdict_fails_and_says_what_to_record(project):
    project.makepyfile(test_claims=CLAIMS.replace("measured(1.0)", "measured(-1.0)"))
    result = project.runpytest("-k", "holds and fashion_mnist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*verdict contradicted*expects reproduced*", "*record it under*LP-7*"])


def test_a_verdict_recorded_as_also_seen_is_unstable_and_any_other_fails(project, expected_text, tmp_path):
    text = expected_text.replace('verdict = "contradicted"\nreason = "a recorded finding"',
                            'verdict = "inconclusive"\nreason = "flips between retrainings"\n'
                            'also_seen = ["reproduced"]')
    assert text.count("also_seen") == 1
    (project.path / "expected" / "local_properties.toml").write_text(text)
    project.makepyfile(test_claims=CLAIMS.replace("measured(-1.0)", "measured(1.0)"))
    result = project.runpytest("-k", "known_finding", "--repro-report", str(tmp_path / "r"))
    result.assert_outcomes(xfailed=1)
    [record] = json.loads((tmp_path / "r" / "report.json").read_text())["claims"]
    assert record["outcome"] == "unstable" and record["also_seen"] == ["reproduced"]
    assert "also seen: reproduced" in (tmp_path / "r" / "report.md").read_text()
    project.makepyfile(test_claims=CLAIMS)  # contradicted: neither the verdict nor the one also seen
    project.runpytest("-k", "known_finding").assert_outcomes(failed=1)


def test_a_known_finding_that_starts_reproducing_fails(project):
    project.makepyfile(test_claims=CLAIMS.replace("measured(-1.0)", "measured(1.0)"))
    result = project.runpytest("-k", "known_finding")
    result.assert_outcomes(failed=1)


def test_an_unknown_claim_id_is_an_error_not_a_pass(project):
    project.makepyfile(test_claims=CLAIMS.replace('claim("LP-7")', 'claim("LP-77")'))
    result = project.runpytest()
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*unknown claim id 'LP-77'*"])


def test_a_claim_test_that_never_checks_fails(project):
    project.makepyfile(test_claims=CLAIMS.replace("check(measured(1.0))", "measured(1.0)"))
    result = project.runpytest("-k", "holds")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*must hand its measurement to `check`*"])


def test_malformed_expected_is_a_usage_error(project, expected_text):
    (project.path / "expected" / "local_properties.toml").write_text(expected_text.replace('comparator = ">"', "", 1))
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*missing field 'comparator'*"])


def test_autosave_then_compare_reports_a_flipped_verdict_and_can_fail(project, tmp_path):
    storage = str(project.path / "runs")
    project.runpytest("--repro-autosave", "--repro-storage", storage).assert_outcomes(passed=2, xfailed=1)
    project.makepyfile(test_claims=CLAIMS.replace("measured(1.0)", "measured(0.0)"))
    result = project.runpytest("--repro-compare", "--repro-storage", storage, "--repro-compare-fail")
    result.stdout.fnmatch_lines(["*changes against*", "*LP-7*verdict flipped: reproduced -> inconclusive*"])
    assert result.ret != 0


def test_bad_device_is_a_usage_error(project):
    result = project.runpytest("--repro-device", "tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_nan_model_in_a_claim_fails_in_one_line_without_a_traceback(project):
    project.makepyfile(test_nan=textwrap.dedent('''
        import math, torch, pytest
        from advclaims.evaluation import accuracy
        from advclaims.plugin import on_datasets

        @pytest.fixture
        def dataset(request):
            return request.param

        @pytest.mark.claim("LP-7")
        @on_datasets("fashion_mnist")
        def test_nan(dataset, check):
            net = torch.nn.Linear(4, 3)
            torch.nn.init.constant_(net.weight, math.nan)
            check(accuracy(net, torch.rand(5, 4), torch.zeros(5, dtype=torch.long)))
    '''))
    result = project.runpytest("test_nan.py")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "test_nan.py::test_nan[fashion_mnist]: NonFiniteLogits: the model produced NaN/inf logits" in out
    assert "Traceback" not in out and "check_finite_logits(" not in out


UNMEASURABLE = textwrap.dedent('''
    import numpy as np
    import pytest
    from advclaims.verdict import stats
    from advclaims.plugin import on_datasets

    @pytest.fixture
    def dataset(request):
        return request.param

    @pytest.fixture
    def boundary_points(dataset):
        if dataset == "cifar100":  # the data allow no measurement before the test body runs
            raise stats.Unmeasurable("class 0: DeepFool reached the boundary from 0 of 400 images")
        return np.ones(0)

    @pytest.mark.claim("LP-7")
    @on_datasets("fashion_mnist", "cifar100")
    def test_group(dataset, boundary_points, check):
        check(stats.mean(boundary_points))  # an empty group: no interval
''')


def test_an_unmeasurable_statistic_is_an_inconclusive_verdict_in_one_line_not_a_traceback(project, tmp_path):
    project.makepyfile(test_unmeasurable=UNMEASURABLE)
    result = project.runpytest("test_unmeasurable.py", "--repro-report", str(tmp_path / "r"))
    result.assert_outcomes(failed=1, errors=1)  # expected/ says reproduced: an inconclusive verdict is a failure
    out = result.stdout.str()
    assert "verdict inconclusive, expected/local_properties.toml expects reproduced" in out
    assert "not measurable: a sample of 0 values: an interval needs at least 2" in out
    assert "not measurable: class 0: DeepFool reached the boundary from 0 of 400 images" in out
    assert "Traceback" not in out and "_as_arrays" not in out
    records = {c["dataset"]: c for c in json.loads((tmp_path / "r" / "report.json").read_text())["claims"]}
    assert set(records) == {"fashion_mnist", "cifar100"}
    assert all(r["verdict"] == "inconclusive" and r["unmeasurable"] for r in records.values())


def test_an_unmeasurable_instance_expected_inconclusive_is_a_known_finding(project, expected_text):
    (project.path / "expected" / "local_properties.toml").write_text(expected_text + textwrap.dedent('''
        [claims.LP-7.expect."*.smoke"]
        verdict = "inconclusive"
        reason = "too few images at smoke"
    '''))
    project.makepyfile(test_unmeasurable=UNMEASURABLE)
    project.runpytest("test_unmeasurable.py").assert_outcomes(xfailed=2)


def test_verdicts_on_proxy_data_are_recorded_but_never_held_against_expected(project, tmp_path):
    from advclaims import data
    root = tmp_path / "data"
    (root / data.FOLDERS["cifar10"]).mkdir(parents=True)
    (root / data.FOLDERS["cifar10"] / data.PROXY_MARKER).write_text('{"proxy_of": "cifar10"}')
    project.makepyfile(test_claims=CLAIMS.replace("measured(1.0)", "measured(-1.0)"))  # contradicted everywhere
    result = project.runpytest("-k", "holds", f"--repro-data-root={root}", f"--repro-report={tmp_path / 'r'}")
    result.assert_outcomes(passed=1, failed=1)  # fashion_mnist is real data: held against expected/
    outcomes = {c["dataset"]: c["outcome"] for c in json.loads((tmp_path / "r" / "report.json").read_text())["claims"]}
    assert outcomes == {"cifar10": "proxy data", "fashion_mnist": "failed"}


SEEDED = textwrap.dedent('''
    import numpy as np
    import pytest
    from advclaims.verdict import stats
    from advclaims.verdict.measurement import Measurement
    from advclaims.plugin import on_datasets

    RUNS = []

    @pytest.fixture
    def dataset(request):
        return request.param

    @pytest.fixture
    def model(dataset, repro_seed):
        RUNS.append(repro_seed)
        return {"shift": 1.0 + 0.5 * repro_seed}   # training seeds disagree: a between-seed variance

    @pytest.mark.claim("LP-7")
    @on_datasets("fashion_mnist")
    def test_seeded(dataset, model, check):
        a = np.random.default_rng(0).normal(model["shift"], 0.1, 200)
        check(Measurement(statistics={"diff": stats.mean(a)}, n=200))

    @pytest.mark.claim("LP-8")
    @on_datasets("fashion_mnist")
    def test_seedless(dataset, check):
        check(Measurement(statistics={"diff": stats.mean(np.random.default_rng(0).normal(-1, 0.1, 200))}, n=200))

    def test_runs():
        assert RUNS == [0, 1, 2] or RUNS == [0], RUNS
''')


def test_training_seeds_pool_into_both_scopes_and_smoke_decides_on_these_models(project, tmp_path):
    project.makepyfile(test_seeded=SEEDED)
    project.runpytest("test_seeded.py", "--repro-seeds=1", f"--repro-report={tmp_path / 'one'}").assert_outcomes(
        passed=2, xfailed=1)
    result = project.runpytest("test_seeded.py", "--repro-seeds=3", f"--repro-report={tmp_path / 'three'}")
    result.assert_outcomes(passed=4, xfailed=1)   # each seed of LP-7 an item; LP-8 depends on no seed: one
    result.stdout.fnmatch_lines(["*test_seeded*seed0*", "*test_seeded*seed2*"] if "-v" in result.outlines else [])
    one, three = ({r["claim"]: r for r in json.loads((tmp_path / d / "report.json").read_text())["claims"]}
                  for d in ("one", "three"))
    c1, c3 = one["LP-7"]["checks"][0], three["LP-7"]["checks"][0]
    assert [round(s["value"], 1) for s in c3["per_seed"]] == [1.0, 1.5, 2.0]
    # smoke decides on these models (the 3 checkpoints at hand): an interval over the shared images
    assert c3["value"] == pytest.approx(1.5, abs=0.02) and c3["scope"] == "models" and "aligned" in c3["method"]
    assert c3["n"] == 200 and three["LP-7"]["n"] == 200                  # the images, not 3 x 200
    recipe = c3["other_scope"]                                            # the recipe's interval, shown
    assert recipe["scope"] == "recipe" and "2 df" in recipe["method"]
    assert (recipe["high"] - recipe["low"]) > 5 * (c1["high"] - c1["low"])  # the seeds' spread, not the images'
    assert three["LP-7"]["scope"] == "models" and three["LP-7"]["contradiction_level"] == pytest.approx(0.95)
    assert three["LP-7"]["seeds"] == [0, 1, 2] and "3 trained models fixed" in three["LP-7"]["variance"]
    assert "one training seed" in one["LP-7"]["variance"]
    assert "per_seed" not in three["LP-8"]["checks"][0]                  # nothing depends on the seed: one run
    md = (tmp_path / "three" / "report.md").read_text()
    assert "scope: these models (the evaluation images" in md and "Intervals cover: these models" in md
    assert any(line.startswith("| `diff` |") and line.count("] ; ") + line.count("]; ") == 2 for line in md.splitlines())


MULTI_EXPECTED = textwrap.dedent('''
    [claims.X-1]
    title = "t"
    source = "s"
    [claims.X-1.expect."*.*"]
    verdict = "reproduced"
''') + "".join(textwrap.dedent(f'''
    [[claims.X-1.checks]]
    statistic = "{name}"
    description = "d"
    comparator = ">"
    threshold = 0.0
    basis = "protocol"
    basis_note = "ours"
''') for name in ("a", "b", "c", "flat"))


def test_evaluate_states_scope_and_levels_and_contradicts_only_at_the_bonferroni_level(tmp_path):
    import numpy as np

    from advclaims.verdict import stats
    from advclaims.verdict.measurement import Measurement
    from advclaims.plugin import evaluate
    (tmp_path / "local_properties.toml").write_text(MULTI_EXPECTED)
    rng = np.random.default_rng(0)
    marginal = stats.mean(rng.normal(0, 1, 300))
    marginal = marginal.shifted(marginal.high + 1e-3)  # the 95% interval just below 0: nominally contradicted
    x = rng.normal(size=300)
    stat = {"a": marginal, "b": stats.mean(rng.normal(1, 1, 300)), "c": stats.mean(rng.normal(1, 1, 300)),
            "flat": stats.mean_difference(x, x)}                   # zero width, not exact: never decides
    r = evaluate("X-1", Measurement(statistics=stat, n=300), expected_dir=tmp_path)
    checks = {c["statistic"]: c for c in r["checks"]}
    # zero width, not exact: inconclusive (it blocks reproduction) and not counted among the checks that can contradict
    assert checks["flat"]["verdict"] == "inconclusive" and "same value" in checks["flat"]["degenerate"]
    assert r["deciding_checks"] == 3 and r["contradiction_level"] == pytest.approx(1 - 0.05 / 3)
    assert checks["a"]["verdict"] == "inconclusive" and checks["a"]["nominal_verdict"] == "contradicted"
    assert checks["a"]["adjusted_low"] < checks["a"]["low"] and checks["a"]["adjusted_high"] > 0
    assert r["verdict"] == "inconclusive" and r["scope"] == "models" and r["level"] == 0.95
    saturated = stats.mean(np.full(300, 0.5))                            # uninformative: shown, never deciding
    one = evaluate("X-1", Measurement(statistics={"a": marginal, "b": saturated, "c": saturated, "flat": saturated},
                                      n=300), expected_dir=tmp_path)
    assert one["deciding_checks"] == 1 and one["verdict"] == "contradicted"   # m = 1: the nominal level
    # fast decides on the recipe when the statistics hold two seeds or more; with one it says so
    seeds = [stats.mean(rng.normal(1 + 0.1 * s, 1, 300)) for s in range(3)]
    pooled = {k: stats.pool(seeds) for k in ("a", "b", "c", "flat")}
    fast = evaluate("X-1", Measurement(statistics=pooled, n=300), budget="fast", expected_dir=tmp_path)
    assert fast["scope"] == "recipe" and fast["checks"][0]["scope"] == "recipe" and fast["scope_note"] is None
    assert "training seeds (3)" in fast["covers"]
    single = evaluate("X-1", Measurement(statistics=stat, n=300), budget="fast", expected_dir=tmp_path)
    assert single["scope"] == "models" and "at least 2" in single["scope_note"]
    ext = evaluate("X-1", Measurement(statistics=pooled, n=300), budget="paper", expected_dir=tmp_path, external=True)
    assert ext["scope"] == "models" and "external" in ext["scope_note"]
    # trends over trained models pooled over 2 seeds (Page's L) have only the recipe scope: smoke decides there,
    # and the record names the seeds it pooled (it said "one run" and "training seeds (1)" before)
    trends = [stats.trend([1.0, 2.0, 3.0, 4.0 + s], [1, 2, 3, 4], alternative="greater") for s in range(2)]
    paged = evaluate("X-1", Measurement(statistics={k: stats.pool(trends) for k in ("a", "b", "c", "flat")}, n=4),
                     expected_dir=tmp_path)
    assert paged["scope"] == "recipe" and paged["checks"][0]["test"].startswith("Page's L")
    assert "2 training seeds by Page's L" in paged["scope_note"] and "one run" not in paged["scope_note"]
    assert "training seeds (2)" in paged["covers"]


def test_a_bad_seed_count_is_a_usage_error(project):
    result = project.runpytest("--repro-seeds=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--repro-seeds 0*"])


PREFLIGHT = textwrap.dedent('''
    import numpy as np
    import pytest
    from advclaims.verdict import stats
    from advclaims.verdict.measurement import Measurement
    from advclaims.plugin import on_datasets

    @pytest.fixture
    def dataset(request):
        return request.param

    @pytest.mark.claim("LP-7")
    @on_datasets("fashion_mnist", "cifar10")
    def test_runs(dataset, pipeline, check):
        assert pipeline.budget.iterations(20) == 2 and pipeline.budget.preflight and pipeline.budget.test_n == max(pipeline.budget.eval_batch, pipeline.budget.curvature.batch, 1000)
        assert "preflight" in str(pipeline.store.root) and not pipeline.enforce_health
        if dataset == "cifar10":
            raise RuntimeError("CUDA out of memory (simulated)")
        check(Measurement(statistics={"diff": stats.mean(np.random.default_rng(0).normal(-1, 0.1, 50))}, n=50))
''')


def test_preflight_reports_ran_or_error_time_and_memory_and_gives_no_verdict(project, tmp_path):
    project.makepyfile(test_preflight=PREFLIGHT)
    out = tmp_path / "r"
    result = project.runpytest("test_preflight.py", "--repro-preflight", "--repro-budget=paper",
                               f"--repro-cache={tmp_path / 'store'}", f"--repro-report={out}")
    result.assert_outcomes(passed=1, failed=1)   # a contradicted verdict is not a failure here: none is given
    result.stdout.fnmatch_lines(["budget paper (preflight: no verdicts): training images 256, evaluation images 1024*",
                                 "*STD: standard training, 1 epoch, batch 128*", "*capped at 2*",
                                 "*advclaims: preflight (no verdicts)*", "LP-7*cifar10*error*CUDA out of memory*",
                                 "LP-7*fashion_mnist*ran*MiB*", "1 ran, 1 errors, 0 skipped*"])
    assert not (out / "report.json").exists()
    rows = {r["instance"]: r for r in json.loads((out / "preflight.json").read_text())["instances"]}
    assert rows["fashion_mnist"]["outcome"] == "ran" and rows["cifar10"]["outcome"] == "error"
    assert all(r["wall_seconds"] >= 0 and r["peak_memory_mib"] > 0 for r in rows.values())
    assert "| LP-7 | fashion_mnist | ran |" in (out / "preflight.md").read_text()


def test_a_preflight_instance_whose_worker_is_killed_is_an_error_row_not_a_missing_one(project, tmp_path):
    # the paper budget's LP-13 once took 19 GiB and its xdist worker was killed: the preflight said "48 ran, 0 errors"
    project.makepyfile(test_preflight=PREFLIGHT.replace('raise RuntimeError("CUDA out of memory (simulated)")',
                                                        'import os, signal; os.kill(os.getpid(), signal.SIGKILL)'))
    out = tmp_path / "r"
    result = project.runpytest_subprocess("test_preflight.py", "-n", "2", "--repro-preflight", "--repro-budget=paper",
                                          f"--repro-cache={tmp_path / 'store'}", f"--repro-report={out}")
    result.stdout.fnmatch_lines(["*crashed while running*", "1 ran, 1 errors, 0 skipped*"])
    rows = json.loads((out / "preflight.json").read_text())["instances"]
    assert sorted(r["outcome"] for r in rows) == ["error", "ran"]
    crashed = next(r for r in rows if r["outcome"] == "error")
    assert "crashed" in crashed["note"] and crashed["peak_memory_mib"] is None and "cifar10" in crashed["instance"]
    assert "| ? |" in (out / "preflight.md").read_text()


SENSITIVE_EXPECTED = textwrap.dedent('''
    [claims.LP-7]
    title = "t"
    source = "s"
    [[claims.LP-7.parameters]]
    name = "radius"
    description = "d"
    default = 1.0
    values = [0.5, 1.0, 2.0]
    basis_note = "ours"
    [[claims.LP-7.checks]]
    statistic = "diff"
    description = "d"
    comparator = ">"
    threshold = 0.0
    basis = "protocol"
    basis_note = "ours"
    threshold_range = [0.0, 0.5]
    [[claims.LP-7.checks]]
    statistic = "saturated"
    description = "the same on every image"
    comparator = "<"
    threshold = 0.0
    basis = "protocol"
    basis_note = "ours"
''')

SENSITIVE = textwrap.dedent('''
    import numpy as np
    import pytest
    from advclaims.verdict import stats
    from advclaims.verdict.measurement import Measurement
    from advclaims.plugin import on_datasets

    @pytest.fixture
    def dataset(request):
        return request.param

    def around(v):
        return stats.mean(np.random.default_rng(0).normal(v, 0.05, 200))

    @pytest.mark.claim("LP-7")
    @on_datasets("fashion_mnist")
    def test_sensitive(dataset, check):
        check(Measurement(statistics={"diff": around(0.3), "saturated": stats.mean(np.full(50, 1.7))}, n=200,
                          sensitivity={"radius": {"0.5": {"diff": around(-0.3)}, "2": {"diff": around(0.6)}}}))
''')


def test_the_verdict_across_our_choices_says_what_it_depends_on_and_saturated_checks_never_decide(project,
                                                                                                   tmp_path):
    (project.path / "expected" / "local_properties.toml").write_text(SENSITIVE_EXPECTED)
    project.makepyfile(test_sensitive=SENSITIVE)
    result = project.runpytest("test_sensitive.py", "--repro-seeds=1", f"--repro-report={tmp_path / 'r'}")
    result.assert_outcomes(passed=1)  # decided at the defaults; the saturated check (1.7, "< 0") does not count
    [record] = json.loads((tmp_path / "r" / "report.json").read_text())["claims"]
    checks = {c["statistic"]: c for c in record["checks"]}
    assert record["verdict"] == "reproduced" and checks["saturated"]["verdict"] == "uninformative"
    assert checks["diff"]["verdict_across_threshold"] == {"0": "reproduced", "0.5": "contradicted"}
    assert [r["verdict"] for r in record["sensitivity"]] == ["contradicted", "reproduced", "reproduced"]
    assert record["depends_on"] == ["radius", "the threshold of diff (ours: 0 to 0.5)"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "depends on radius" in md and "Verdict across our protocol parameters" in md


def test_a_preflight_caps_iterations_through_its_budget_and_leaves_nothing_behind(project, tmp_path):
    """The cap lives in the preflight budget (its attacks are called with capped counts); no process-wide state."""
    from advclaims import budgets
    from advclaims.attacks import pgd
    project.makepyfile(test_preflight=PREFLIGHT)
    project.runpytest("test_preflight.py", "--repro-preflight", "--repro-budget=paper",
                      f"--repro-cache={tmp_path / 'store'}")
    assert budgets.get("paper").iterations(20) == 20 and budgets.get("paper").for_preflight().iterations(20) == 2
    seen = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    hook = net.register_forward_hook(lambda *_: seen.append(1))
    pgd(net, torch.rand(1, 1, 2, 2), torch.tensor([0]), eps=0.1, alpha=0.01, steps=20, random_start=False)
    hook.remove()
    assert len(seen) >= 20   # after a preflight in this process, PGD-20 still runs its 20 steps


