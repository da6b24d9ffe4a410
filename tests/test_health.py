"""The model-health gate: an untrained or gradient-masked model gives one line, never a verdict."""

import gzip
import json
import struct
import textwrap

import numpy as np
import pytest

from advclaims.checkpoints import health
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.checkpoints.store import Store


HEALTHY = {"clean_accuracy": 0.8, "pgd20_accuracy": 0.4, "eval_images": 500, "loss_first_steps": 2.3,
           "loss_last_steps": 0.6}
ADV = {**HEALTHY, "fgsm_accuracy": 0.5, "pgd_only_fooled": 60, "fgsm_only_fooled": 10, "restart_images": 200,
       "pgd20_single_accuracy_restart_images": 0.41, "pgd20_restarts4_accuracy": 0.40}


def test_a_model_that_learned_passes_the_gate():
    assert health.assess(HEALTHY, num_classes=10, budget="smoke", adversarial=False).healthy
    assert health.assess(ADV, num_classes=10, budget="paper", adversarial=True).healthy


@pytest.mark.parametrize("clean, n, fails", [
    (0.10, 500, "not above chance"),          # chance on 10 classes
    (0.13, 100, "not above chance"),          # above chance by luck of 100 images: the binomial test says no
    (0.17, 500, "below the smoke floor"),     # above chance (p < 1e-3) but not clearly learned
])
def test_clean_accuracy_must_be_clearly_above_chance(clean, n, fails):
    h = health.assess({**HEALTHY, "clean_accuracy": clean, "eval_images": n}, num_classes=10, budget="smoke",
                      adversarial=False)
    assert not h.healthy and any(fails in f for f in h.failures)


def test_the_floor_follows_the_class_count_and_the_budget():
    # 100 classes: 15% is 15 times chance and above the smoke floor (10.9%), below the paper floor (25.75%)
    metrics = {**HEALTHY, "clean_accuracy": 0.15}
    assert health.assess(metrics, num_classes=100, budget="smoke", adversarial=False).healthy
    assert not health.assess(metrics, num_classes=100, budget="paper", adversarial=False).healthy


def test_a_loss_that_did_not_fall_fails():
    h = health.assess({**HEALTHY, "loss_last_steps": 2.31}, num_classes=10, budget="smoke", adversarial=False)
    assert not h.healthy and "did not fall" in h.failures[0]


def test_pgd_weaker_than_fgsm_is_gradient_masking():
    masked = {**ADV, "pgd20_accuracy": 0.55, "fgsm_accuracy": 0.45, "pgd_only_fooled": 5, "fgsm_only_fooled": 55}
    h = health.assess(masked, num_classes=10, budget="smoke", adversarial=True)
    assert not h.healthy and "masked" in h.failures[0]
    # the same gap on a handful of discordant images is noise, not masking
    noisy = {**masked, "pgd20_accuracy": 0.412, "fgsm_accuracy": 0.40, "pgd_only_fooled": 2, "fgsm_only_fooled": 8}
    assert health.assess(noisy, num_classes=10, budget="smoke", adversarial=True).healthy


def test_restarts_that_find_many_more_adversarial_examples_are_gradient_masking():
    h = health.assess({**ADV, "pgd20_restarts4_accuracy": 0.30}, num_classes=10, budget="smoke", adversarial=True)
    assert not h.healthy and "restarts" in h.failures[0]


def test_the_refusal_is_one_line_naming_model_accuracies_chance_recipe_and_fix(tmp_path):
    h = health.assess({**HEALTHY, "clean_accuracy": 0.1}, num_classes=10, budget="smoke", adversarial=False)
    recipe = {"method": "standard", "epochs": 4, "batch_size": 128, "lr": 0.1, "schedule": "triangle",
              "weight_decay": 5e-4, "eps": 0.0, "attack_steps": 0}
    line = health.refusal("STD (nin on cifar10, store key abc)", h, recipe=recipe, path=tmp_path / "abc.pt",
                          budget="smoke")
    assert "\n" not in line
    for part in ("STD (nin on cifar10", "clean accuracy 10.0%", "chance 10.0%", "standard training, 4 epochs",
                 "Change:", str(tmp_path / "abc.pt")):
        assert part in line


# ---------------------------------------------------------------------------------------------
# the gate in the pipeline: a model trained on random labels cannot learn


def _idx(path, arr):
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    path.write_bytes(gzip.compress(bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
                                   + arr.tobytes()))


@pytest.fixture(scope="module")
def random_labels(tmp_path_factory):
    """MNIST files whose labels are random: nothing to learn, so no model passes the gate."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 400), ("t10k", 300)):
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


def test_a_model_that_did_not_learn_is_refused_on_training_and_on_every_load(random_labels, tmp_path):
    store = Store(tmp_path / "store")
    pipe = Pipeline(budget="smoke", store=store, data_root=random_labels, progress=False)
    with pytest.raises(health.ModelUnhealthy) as first:
        pipe.model("std", "mnist", arch="lenet")
    line = str(first.value)
    assert "\n" not in line and "failed the health gate" in line and "chance 10.0%" in line
    with pytest.raises(health.ModelUnhealthy) as again:   # every instance that needs it: the same line, no retraining
        pipe.model("std", "mnist", arch="lenet")
    assert str(again.value) == line and len(store.made) == 1
    kept = list((tmp_path / "store" / "models").glob("*.pt"))
    assert len(kept) == 1                                    # the checkpoint is kept ...
    fresh = Pipeline(budget="smoke", store=store, data_root=random_labels, progress=False)
    with pytest.raises(health.ModelUnhealthy):               # ... and never reused as healthy
        fresh.model("std", "mnist", arch="lenet")
    assert len(store.made) == 1 and store.loaded
    report_only = Pipeline(budget="smoke", store=store, data_root=random_labels, progress=False,
                           enforce_health=False)             # the preflight: the verdict is reported, not enforced
    model = report_only.model("std", "mnist", arch="lenet")
    assert model.health is not None and not model.health.healthy


def test_a_claim_on_an_unhealthy_model_errors_in_one_line_and_gives_no_verdict(claim_project, tmp_path):
    pytester = claim_project()
    pytester.makepyfile(test_claim=textwrap.dedent('''
        import pytest
        from advclaims.checkpoints.health import ModelUnhealthy
        from advclaims.plugin import on_datasets

        @pytest.fixture
        def dataset(request):
            return request.param

        @pytest.fixture
        def std_model():
            raise ModelUnhealthy("model STD (nin on cifar10) failed the health gate at the smoke budget: ...")

        @pytest.mark.claim("LP-7")
        @on_datasets("cifar10")
        def test_claim(dataset, std_model, check):
            check(None)
    '''))
    result = pytester.runpytest(f"--repro-report={tmp_path / 'r'}")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "ModelUnhealthy: model STD (nin on cifar10) failed the health gate" in out and "Traceback" not in out
    [row] = json.loads((tmp_path / "r" / "report.json").read_text())["claims"]  # an error row, no verdict
    assert row["outcome"] == "error" and row["error"].startswith("ModelUnhealthy: model STD (nin on cifar10)")
    assert all(c["value"] is None for c in row["checks"])
