"""Report: JSON and Markdown carry every verdict; saved runs compare; flips are found."""

import json

import pytest

from advclaims.verdict import report



def record(claim="LP-8", dataset="fashion_mnist", verdict="reproduced", value=2.0, low=1.5, high=2.5,
           outcome="passed"):
    return {
        "claim": claim, "paper": "local_properties", "title": "t", "source": "Table 1", "dataset": dataset,
        "budget": "smoke", "seeds": [0], "n": 500, "verdict": verdict, "expected": "reproduced",
        "expected_reason": None, "outcome": outcome, "wall_seconds": 1.0, "paper_setting": False,
        "checks": [{"statistic": "max_ratio_layer4", "description": "d", "comparator": ">", "threshold": 1.0,
                    "paper": 3.65, "tolerance": None, "value": value, "low": low, "high": high, "n": 500,
                    "confidence": 0.95, "method": "bootstrap BCa", "verdict": verdict}],
        "values": [{"statistic": "std_max_layer4", "description": "d", "paper": 3.72, "tolerance": 1.86,
                    "measured": 2.9, "within": True}],
        "tables": {"table1": [{"layer": "Layer4", "max_std": 2.9, "max_std_ci": [2.8, 3.0]}]},
        "tests": [], "notes": [], "protocol_note": None, "figures": ["figures/x.png"], "figure_errors": [],
    }


def test_markdown_shows_every_verdict_including_inconclusive_and_known_findings():
    recs = [record(), record(claim="LP-7", verdict="inconclusive", outcome="known finding"),
            record(claim="LP-9", verdict="contradicted", outcome="failed")]
    md = report.markdown(report.build(recs, budget="smoke", argv=["pytest"]))
    for needle in ("reproduced", "inconclusive", "contradicted", "known finding", "Table `table1`",
                   "2.9 [2.8, 3]", "figures/x.png", "| `std_max_layer4` |"):
        assert needle in md
    assert md.index("LP-7") < md.index("LP-8") < md.index("LP-9")


def test_claims_sort_numerically_not_lexically():
    recs = [record(claim="LP-10"), record(claim="LP-9")]
    built = report.build(recs, budget="smoke", argv=[])
    assert [r["claim"] for r in built["claims"]] == ["LP-9", "LP-10"]


def test_write_produces_json_that_round_trips(tmp_path):
    machine = {"host": "h", "device": "cpu", "torch": "2.x", "python": "3.11", "threads": 1}
    built = report.build([record()], budget="smoke", argv=["pytest", "claims"], machine=machine, commit="abc")
    report.write(tmp_path, built)
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["claims"][0]["checks"][0]["value"] == 2.0
    assert loaded["summary"]["reproduced"] == 1 and loaded["machine"] == machine and loaded["commit"] == "abc"
    assert (tmp_path / "report.md").read_text().startswith("# advclaims report")


def test_compare_finds_flips_moves_new_and_missing_claims():
    old = report.build([record(), record(claim="LP-7")], budget="smoke", argv=[])
    new = report.build([record(verdict="inconclusive", value=1.1, low=0.9, high=1.3),
                        record(claim="LP-9")], budget="smoke", argv=[])
    kinds = {(c["claim"], c["kind"]) for c in report.compare(old, new)}
    assert kinds == {("LP-8", "verdict flipped"), ("LP-8", "statistic moved"), ("LP-9", "new"), ("LP-7", "not run")}


def test_compare_ignores_moves_within_the_interval():
    old = report.build([record()], budget="smoke", argv=[])
    new = report.build([record(value=2.2, low=1.8, high=2.6)], budget="smoke", argv=[])
    assert report.compare(old, new) == []


def test_saved_runs_are_numbered_and_the_latest_is_found(tmp_path):
    built = report.build([record()], budget="smoke", argv=[])
    first = report.save_run(tmp_path, built)
    second = report.save_run(tmp_path, built)
    assert first.name.startswith("0001_") and second.name.startswith("0002_")
    assert report.find_run(tmp_path, "latest") == second
    assert report.find_run(tmp_path, "0001") == first == report.find_run(tmp_path, "1")
    with pytest.raises(FileNotFoundError, match="--repro-autosave"):
        report.find_run(tmp_path / "empty", "latest")


def test_compare_keeps_architectures_of_one_claim_apart():
    a, b = record(dataset="cifar10"), record(dataset="cifar10", verdict="inconclusive")
    a["variant"], b["variant"] = "cifar10-vgg16", "cifar10-wrn28_10"
    old = report.build([a, b], budget="paper", argv=[])
    assert report.compare(old, old) == []
    flipped = dict(b, verdict="reproduced")
    changes = report.compare(old, report.build([a, flipped], budget="paper", argv=[]))
    assert [(c["dataset"], c["kind"]) for c in changes] == [("cifar10-wrn28_10", "verdict flipped")]


def test_the_table_shows_the_check_that_decides_the_verdict():
    r = record(verdict="contradicted")
    r["checks"] = [dict(r["checks"][0], statistic="holds", verdict="reproduced"),
                   dict(r["checks"][0], statistic="fails", verdict="contradicted")]
    assert report.headline(r)["statistic"] == "fails"
    md = report.markdown(report.build([r], budget="smoke", argv=[]))
    assert "| `fails` (+1 more) |" in md


def test_an_interval_at_another_confidence_says_so():
    r = record()
    r["checks"][0]["confidence"] = 0.98
    md = report.markdown(report.build([r], budget="smoke", argv=[]))
    assert "2 [1.5, 2.5] (98% CI)" in md
    assert "(95% CI)" not in report.markdown(report.build([record()], budget="smoke", argv=[]))


def test_measured_keeps_statistics_and_drops_timings():
    def run(seconds, value):
        return {"claims": [{"claim": "CV-1", "dataset": "fashion_mnist", "variant": "fashion_mnist",
                            "verdict": "contradicted", "checks": [{"statistic": "s", "value": value}],
                            "tables": {"per_class": [{"class": 0, "asym": 0.33, "seconds": seconds}]},
                            "values": [{"statistic": "seconds_all_classes", "measured": seconds},
                                       {"statistic": "step_h", "measured": 0.55}],
                            "wall_seconds": seconds}]}
    assert report.measured(run(2.2, 0.5)) == report.measured(run(2.3, 0.5))
    assert report.measured(run(2.2, 0.5))["CV-1/fashion_mnist"]["values"] == [{"statistic": "step_h", "measured": 0.55}]
    assert report.measured(run(2.2, 0.5)) != report.measured(run(2.2, 0.6))
    assert report.measured(run(2.2, 0.5))["CV-1/fashion_mnist"]["tables"]["per_class"] == [{"class": 0, "asym": 0.33}]


def test_a_claim_prints_its_scope_and_levels_and_a_trend_its_p_values_not_an_interval():
    r = record(verdict="inconclusive")
    r.update(scope="recipe", scope_name="this training recipe", covers="training seeds (5), the images",
             scope_note=None, level=0.95, contradiction_level=1 - 0.05 / 13, deciding_checks=13)
    r["checks"] = [dict(r["checks"][0], statistic="rho", value=-1.0, low=-1.0, high=1.0, method="exact permutation",
                        pvalues={"greater": 1.0, "less": 1 / 24}, test="exact permutation test over 4 models"),
                   dict(r["checks"][0], statistic="gap", verdict="inconclusive", nominal_verdict="contradicted",
                        adjusted_low=0.4, adjusted_high=1.2, contradiction_level=1 - 0.05 / 13)]
    md = report.markdown(report.build([r], budget="paper", argv=[]))
    assert ("scope: this training recipe (training seeds (5), the images); reproduction at 95%, contradiction at "
            "99.6% for 13 deciding checks (Bonferroni)") in md
    assert "rho -1 (p 1 increasing, 0.0417 decreasing; exact permutation test over 4 models)" in md
    assert "2 [1.5, 2.5]; at 99.6% [0.4, 1.2]" in md


def _own(r: dict, kind: str = "entry_point", reference: dict | None = None) -> dict:
    """``r`` on a user's model (an external model among the ones it used)."""
    r["models"] = [{"key": "mine", "label": "ADV (mine.pt)", "arch": "resnet18", "dataset": r["dataset"],
                    "source": {"kind": kind, "spec": "mymodels:load", "sha256": "0" * 64,
                               **({"reference": reference} if reference else {})},
                    "clean_accuracy": 0.8}]
    return r


def test_the_summary_holds_only_the_suites_own_verdicts_against_expected_and_counts_errors_apart():
    error = dict(record(claim="LP-9", verdict="inconclusive", outcome="error"), error="RuntimeError: boom")
    own_error = _own(dict(record(claim="LP-10", verdict="inconclusive", outcome="error"), error="ModelUnhealthy: x"))
    recs = [record(), record(claim="LP-7", outcome="failed", verdict="contradicted"), error, own_error,
            _own(record(claim="LP-11", outcome="own model"))]
    s = report.summary(recs)
    assert (s["reproduced"], s["contradicted"], s["inconclusive"]) == (2, 1, 0)  # an error row has no verdict
    assert (s["as_expected"], s["held"], s["errors"], s["own_model"], s["total"]) == (1, 2, 2, 1, 5)
    md = report.markdown(report.build(recs, budget="smoke", argv=[]))
    assert ("verdicts: 2 reproduced, 1 contradicted, 0 inconclusive; 1 of 2 as `expected/` records; 2 raised an "
            "error (no verdict, counted in none of the above); 1 on your own models") in md


def test_the_reference_the_probe_held_a_users_model_against_is_a_row_of_the_model_table():
    ref = {"what": "the suite's own STD resnet18 at the smoke budget", "clean_accuracy": 0.802, "key": "k0",
           "trained_now": True, "label": "STD (reference)", "arch": "resnet18", "dataset": "fashion_mnist",
           "role": "std", "seed": 0, "budget": "smoke", "pgd20_accuracy": 0.01, "healthy": True}
    built = report.build([_own(record(outcome="own model"), reference=ref)], budget="smoke", argv=[])
    rows = {m["key"]: m for m in built["models"]}
    assert rows["k0"]["reference_for"] == ["ADV (mine.pt) (trained now for the probe)"] and not rows["k0"]["used_by"]
    md = report.markdown(built)
    assert ("| STD (reference) | resnet18 | fashion_mnist | 0 | trained here (smoke budget) | 0.802 | 0.01 | – | passed "
            "| – | the reference probe of ADV (mine.pt) (trained now for the probe) |") in md
    assert "reference probe: the suite's own STD resnet18 at the smoke budget (0.802, store key k0)" in md
    assert report.reference_text(ref) == ("the suite's own STD resnet18 at the smoke budget (80.2%; store key k0, "
                                          "trained now for the probe)")


CRASH = '''
import os
import signal

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
def test_claim(dataset, check):
    if dataset == "cifar10":
        os.kill(os.getpid(), signal.SIGKILL)   # as the kernel's OOM killer does
    check(Measurement(statistics={"diff": stats.mean(np.random.default_rng(0).normal(1, 0.1, 50))}, n=50))

def test_not_a_claim():
    os.kill(os.getpid(), signal.SIGKILL)
'''


def test_an_instance_whose_worker_is_killed_is_an_error_row(claim_project, tmp_path):
    pytester = claim_project(test_crash=CRASH)
    out = tmp_path / "r"
    result = pytester.runpytest_subprocess("-n", "2", f"--repro-cache={tmp_path / 'store'}", f"--repro-report={out}")
    result.stdout.fnmatch_lines(["*crashed while running*", "*1 of 2 instances raised an error*"])
    built = json.loads((out / "report.json").read_text())
    rows = {r["variant"]: r for r in built["claims"]}
    assert set(rows) == {"fashion_mnist", "cifar10"}  # a test that is no claim gets no row
    crashed = rows["cifar10"]
    assert crashed["claim"] == "LP-7" and crashed["outcome"] == "error" and crashed["verdict"] == "inconclusive"
    assert "crashed while running" in crashed["error"] and "killed for memory" in crashed["error"]
    assert built["summary"]["errors"] == 1 and built["summary"]["as_expected"] == built["summary"]["held"] == 1
    md = (out / "report.md").read_text()
    assert "| LP-7 | cifar10 |" in md and "1 raised an error" in md and "**Error** (no verdict): worker" in md
