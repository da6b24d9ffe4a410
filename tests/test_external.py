"""Claims on the user's own checkpoints: --repro-model, advclaims import, zoo key layouts, and every refusal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from advclaims import data, models

from advclaims.checkpoints import external

from advclaims.checkpoints import health
from advclaims.cli import main as cli
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.checkpoints.store import Store
from advclaims.verdict import expected

ROOT = Path(__file__).resolve().parents[1]
FM = data.info("fashion_mnist")


def _fashion_mnist_or_skip():
    try:
        data.read_arrays("fashion_mnist", "test", data.default_root(), limit=1)
    except data.DatasetMissing as err:
        pytest.skip(str(err))


def _tiny(arch: str = "resnet18", classes: int = 10, channels: int = 1, width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return models.build(arch, in_channels=channels, num_classes=classes, width=width, mean=FM.mean, std=FM.std,
                        input_size=28).eval()


# ---------------------------------------------------------------------------------------------
# zoo key layouts: a registry model's weights renamed as the zoos name them load back to the same logits


def _zoo_names(arch: str, state: dict) -> dict:
    out = {}
    for k, v in state.items():
        if k.startswith("normalize."):
            continue  # zoos normalise outside the model
        if arch == "resnet18":
            k = re.sub(r"^layer0\.0\.", "bn1.", re.sub(r"^fc\.", "linear.", k))
        elif arch == "preact_resnet18":
            k = re.sub(r"\.shortcut\.", ".shortcut.0.", re.sub(r"^fc\.", "linear.", k))
        elif arch == "wrn28_10":
            k = re.sub(r"^layer(\d)\.", r"block\1.layer.", k).replace(".shortcut.", ".convShortcut.")
            k = re.sub(r"^bn\.", "bn1.", k)
        out[f"module.{k}"] = v  # saved from DataParallel
    return out


@pytest.mark.parametrize("arch, width", [("resnet18", 4), ("preact_resnet18", 4), ("wrn28_10", 1)])
def test_zoo_checkpoints_load_onto_the_registry_architectures(tmp_path, arch, width):
    model = _tiny(arch, width=width)
    for m in model.modules():  # non-trivial BatchNorm statistics, so that a misplaced key shows in the logits
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.9, 1.1)
    path = tmp_path / "zoo.pt"
    torch.save({"epoch": 99, "state_dict": _zoo_names(arch, model.state_dict())}, path)
    loaded = external.build(external.parse_spec(f"{arch}:{path}"), "fashion_mnist")
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# refusals, each one line


def _one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_a_state_dict_whose_keys_do_not_fit_names_them(tmp_path):
    state = _tiny().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layer4.1.conv2.weight"]
    path = tmp_path / "m.pt"
    torch.save(state, path)
    with pytest.raises(external.ModelRefused) as err:
        external.build(external.parse_spec(f"resnet18:{path}"), "fashion_mnist")
    text = _one_line(err)
    assert "missing layer4.1.conv2.weight" in text and "unexpected extra.weight" in text


def test_a_wrong_class_count_is_refused(tmp_path):
    path = tmp_path / "cifar100.pt"
    torch.save(_tiny(classes=100).state_dict(), path)
    with pytest.raises(external.ModelRefused) as err:
        external.build(external.parse_spec(f"resnet18:{path}"), "fashion_mnist")
    assert "class-count mismatch: the dataset has 10 classes" in _one_line(err)


def test_a_checkpoint_that_is_not_weights_only_loadable_is_refused(tmp_path):
    path = tmp_path / "pickled_module.pt"
    torch.save(_tiny(), path)  # the whole module object: unpickling it would run code
    with pytest.raises(external.ModelRefused) as err:
        external.build(external.parse_spec(f"resnet18:{path}"), "fashion_mnist")
    assert "not weights_only loadable" in _one_line(err) and "torch.save(model.state_dict(), path)" in str(err.value)


@pytest.fixture
def entry_points(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn
        from advclaims import models

        def _resnet(classes=10, channels=1):
            torch.manual_seed(0)
            return models.build("resnet18", in_channels=channels, num_classes=classes, width=4)

        def five_classes():
            return _resnet(classes=5)

        def rgb_only():
            return _resnet(channels=3)

        class Noisy(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = _resnet()
            def forward(self, x):
                return self.net(torch.nn.functional.dropout(x, 0.5, training=True))  # dropout at test time

        def noisy():
            return Noisy()

        def not_a_module():
            return {"weights": 1}
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("entry, says", [
    ("user_models:five_classes", "returns (2, 5)"),
    ("user_models:rgb_only", "does not take fashion_mnist's images (N, 1, 28, 28)"),
    ("user_models:noisy", "is not eval-safe (two eval forwards of one batch differ)"),
    ("user_models:not_a_module", "returned a dict, not a torch.nn.Module"),
    ("user_models:absent", "AttributeError"),
])
def test_entry_point_models_that_do_not_fit_are_refused_in_one_line(entry_points, entry, says):
    with pytest.raises(external.ModelRefused) as err:
        external.build(external.parse_spec(entry), "fashion_mnist")
    assert says in _one_line(err)


def test_bad_specs_are_refused():
    for spec in ("resnet18", "resnet18:/no/such/file.pt", "not a spec:at all"):
        with pytest.raises(external.ModelRefused):
            external.parse_spec(spec)


# ---------------------------------------------------------------------------------------------
# through the pipeline, the CLI and pytest: the suite's own models, exported and re-imported


@pytest.fixture(scope="module")
def exported(tmp_path_factory, suite_models_into):
    """The ADV and STD ResNet-18 the claims train on Fashion-MNIST at smoke (seed 0), exported as plain state
    dicts, and the store they live in: this module's own (its tests import, measure and attack there), the two models
    copied in from the shared store (trained there first if missing, each once: conftest.suite_models_into)."""
    _fashion_mnist_or_skip()
    store = Store(tmp_path_factory.mktemp("store"))
    pipe = Pipeline(budget="smoke", store=store, progress=False)
    suite_models_into(store, [("adv", 0), ("std", 0)])
    folder = tmp_path_factory.mktemp("exported")
    paths = {}
    for role in ("adv", "std"):
        model = pipe.model(role, "fashion_mnist", seed=0)
        paths[role] = folder / f"{role}.pt"
        torch.save(model.module.state_dict(), paths[role])
    return store, paths


def test_a_model_that_is_not_on_unit_pixels_fails_the_health_gate_at_import(exported, tmp_path, monkeypatch):
    store, paths = exported
    (tmp_path / "pixels255.py").write_text(textwrap.dedent(f'''
        import torch
        from torch import nn
        from advclaims import data, models

        class Expects255(nn.Module):   # a model that wants pixels in [0, 255]
            def __init__(self):
                super().__init__()
                meta = data.info("fashion_mnist")
                self.net = models.build("resnet18", in_channels=1, num_classes=10, width=8, mean=meta.mean,
                                        std=meta.std)
                self.net.load_state_dict(torch.load({str(paths["std"])!r}, weights_only=True))
            def forward(self, x):
                return self.net(x / 255.0)

        def model():
            return Expects255()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    pipe = Pipeline(budget="smoke", store=Store(tmp_path / "store"), progress=False)
    with pytest.raises(health.ModelUnhealthy) as err:
        pipe.import_model("pixels255:model", "std", "fashion_mnist", name="pixels255")
    assert "failed the health gate" in _one_line(err) and "pixels in [0, 1]" in str(err.value)
    assert not list((tmp_path / "store").glob("imported/*.pt"))  # nothing refused enters the store


def _claims(*args, tmp_path, env=None) -> dict:
    cmd = [sys.executable, "-m", "pytest", "claims/test_local_properties.py", "-m", "fashion_mnist", "-p", "no:xdist",
           "-q", "--repro-budget", "smoke", "--repro-seeds", "1", "--repro-quiet", "--repro-report", str(tmp_path),
           *args]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads((tmp_path / "report.json").read_text())


@pytest.mark.slow
def test_an_exported_model_reimported_under_another_name_gives_the_same_statistics(exported, tmp_path):
    store, paths = exported
    assert cli(["import", f"resnet18:{paths['adv']}", "--role", "adv", "--dataset", "fashion_mnist", "--name",
                "my_robust_model", "--published-clean", "0.80", "--cache", str(store.root)]) == 0
    select = ["-k", "fgsm_is_weaker_than_pgd20", "--repro-cache", str(store.root)]
    ours = _claims(*select, tmp_path=tmp_path / "trained")
    theirs = _claims(*select, "--repro-model", "adv=my_robust_model", tmp_path=tmp_path / "imported")
    a, b = ours["claims"][0], theirs["claims"][0]
    assert a["claim"] == b["claim"] == "LP-7"
    assert [(c["value"], c["low"], c["high"]) for c in a["checks"]] == [(c["value"], c["low"], c["high"])
                                                                         for c in b["checks"]]
    [model] = theirs["models"]
    assert model["source"]["imported"] and model["source"]["name"] == "my_robust_model"
    assert model["source"]["published"] == {"clean": 0.80} and model["clean_accuracy"] == pytest.approx(
        ours["models"][0]["clean_accuracy"])
    md = (tmp_path / "imported" / "report.md").read_text()
    assert "## Models" in md and "imported: resnet18:" in md and "clean 0.8" in md


@pytest.mark.slow
def test_an_entry_point_model_from_a_temporary_module_runs_lp7_and_lp8(exported, tmp_path):
    store, paths = exported
    (tmp_path / "zoo_entry.py").write_text(textwrap.dedent(f'''
        import torch
        from advclaims import data, models

        def _load(path):
            meta = data.info("fashion_mnist")
            net = models.build("resnet18", in_channels=1, num_classes=10, width=8, mean=meta.mean, std=meta.std)
            net.load_state_dict(torch.load(path, weights_only=True))
            return net.eval()

        def standard():
            return _load({str(paths["std"])!r})

        def robust():
            return _load({str(paths["adv"])!r})
    '''))
    report = _claims("-k", "fgsm_is_weaker_than_pgd20 or larger_local_response_differences",
                     "--repro-model", "adv=zoo_entry:robust", "--repro-model", "std=zoo_entry:standard",
                     "--repro-cache", str(store.root), tmp_path=tmp_path / "report",
                     env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert sorted(r["claim"] for r in report["claims"]) == ["LP-7", "LP-8"]
    # the entry points load the suite's own smoke checkpoints: the suite's verdicts, which expected/ records
    records = expected.load(ROOT / "expected")
    assert {r["claim"]: r["verdict"] for r in report["claims"]} == {
        cid: records[cid].expectation("fashion_mnist", "smoke").verdict.value for cid in ("LP-7", "LP-8")}
    given = [m for m in report["models"] if not m.get("reference_for")]
    kinds = {m["label"]: m["source"]["kind"] for m in given}
    assert set(kinds.values()) == {"entry_point"} and len(kinds) == 2  # the claims ran on the given models only
    assert {r["outcome"] for r in report["claims"]} == {"own model"}  # never held against expected/
    # the suite's models the reference probe used are rows of the model table of their own, used by no claim
    references = [m for m in report["models"] if m.get("reference_for")]
    assert sorted(m["label"] for m in references) == ["ADV (reference)", "STD (reference)"]
    assert not any(m["used_by"] for m in references)
    # the health gate's reference probe held each against the suite's own model of its role (this module's store's)
    assert {m["source"]["reference"]["what"] for m in given} == {
        f"the suite's own {role} resnet18 at the smoke budget" for role in ("STD", "ADV")}
