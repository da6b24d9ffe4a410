"""A user's own checkpoint, trusted (issue 20): identity by weights, stage maps for a layout of one's own, an error
row for any instance that raises, the reference probe of the health gate, and a user's model judged on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advclaims import data, models

from advclaims.checkpoints import external

from advclaims.checkpoints import health
from advclaims.analysis import responses
from advclaims.cli import main as cli
from advclaims.plugin.options import external_models, published_accuracies, stage_maps, validate_options
from advclaims.checkpoints.own_models import identity
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.plugin.reporting import ERROR_CHARS, error_line
from advclaims.checkpoints.store import Store


ROOT = Path(__file__).resolve().parents[1]
FM = data.info("fashion_mnist")
STAGE_MAP = ",".join(f"{s}:inner.{s}" for s in models.RESNET_STAGES)  # the user's layout holds the ResNet as .inner


def _tiny(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return models.build("resnet18", in_channels=1, num_classes=10, width=width, mean=FM.mean, std=FM.std,
                        input_size=28).eval()


class Wrapped(nn.Module):
    """A layout of a user's own: the stages sit under other module paths."""

    def __init__(self, net):
        super().__init__()
        self.inner = net

    def forward(self, x):
        return self.inner(x)


# ---------------------------------------------------------------------------------------------
# fast: the pieces


def test_the_state_hash_follows_the_weights_not_the_object():
    a, b = _tiny(), _tiny()
    assert external.state_sha256(a) == external.state_sha256(b) == external.state_sha256(a.state_dict())
    with torch.no_grad():
        b.fc.weight[0, 0] += 1e-3
    assert external.state_sha256(a) != external.state_sha256(b)


def test_a_relative_checkpoint_path_resolves_against_the_invocation_directory(tmp_path, monkeypatch):
    (tmp_path / "ckpt").mkdir()
    torch.save(_tiny().state_dict(), tmp_path / "ckpt" / "m.pt")
    monkeypatch.chdir(ROOT)  # pytest's own directory is elsewhere: the user's directory decides
    [(slot, spec)] = external_models(["adv=resnet18:ckpt/m.pt"], base=tmp_path).items()
    assert spec == f"resnet18:{(tmp_path / 'ckpt' / 'm.pt').resolve()}"
    with pytest.raises(pytest.UsageError, match="no checkpoint file"):
        external_models(["adv=resnet18:ckpt/m.pt"], base=ROOT)


def test_an_entry_point_whose_module_is_not_importable_is_one_usage_error():
    with pytest.raises(pytest.UsageError) as err:
        external_models(["adv=no_such_user_module:load"])
    text = str(err.value)
    assert "\n" not in text and "not importable" in text and "PYTHONPATH" in text


def test_a_key_mismatch_points_to_an_entry_point(tmp_path):
    state = {f"body.{k}": v for k, v in _tiny().state_dict().items()}
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(external.ModelRefused, match="use module:callable for a layout of your own"):
        external.build(external.parse_spec(f"resnet18:{tmp_path / 'm.pt'}"), "fashion_mnist")


def test_stage_maps_parse_and_refuse_in_one_line():
    assert stage_maps([f"adv={STAGE_MAP}"]) == {"adv": {s: f"inner.{s}" for s in models.RESNET_STAGES}}
    for bad in ("adv=conv9:body.0", "adv=conv1", "nope=conv1:body.0", "adv=conv1:a,conv1:b"):
        with pytest.raises(pytest.UsageError) as err:
            stage_maps([bad])
        assert "\n" not in str(err.value)


def test_a_stage_map_finds_the_stages_of_a_users_layout_and_their_absence_names_them():
    net = _tiny()
    mine = Wrapped(net).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with pytest.raises(external.StagesMissing) as err:
        responses.stage_outputs(mine, x, models.RESNET_STAGES)
    text = str(err.value)
    external.set_stages(mine, None, "adv")
    with pytest.raises(external.StagesMissing) as err:
        responses.stage_outputs(mine, x, models.RESNET_STAGES)
    text = str(err.value)
    assert "\n" not in text and "conv1, layer0, layer1, layer2, layer3, layer4" in text
    assert "--repro-stages adv=conv1:MODULE,layer0:MODULE" in text and "inner" in text
    external.check_stages(mine, external.parse_stages(STAGE_MAP), "mine")
    external.set_stages(mine, external.parse_stages(STAGE_MAP), "adv")
    got, want = responses.stage_outputs(mine, x, models.RESNET_STAGES), responses.stage_outputs(net, x,
                                                                                                models.RESNET_STAGES)
    assert all(torch.equal(got[s], want[s]) for s in models.RESNET_STAGES)
    with pytest.raises(external.ModelRefused, match="name no module"):
        external.check_stages(mine, {"conv1": "body.0"}, "mine")


def test_the_reference_probe_refuses_far_below_and_passes_near():
    far = health.reference_failure({"clean_accuracy": 0.228, "eval_images": 1000}, 0.79, "the reference")
    assert far and far.startswith("reference probe:") and "more than 15 points below the reference 79.0%" in far
    assert health.reference_failure({"clean_accuracy": 0.70, "eval_images": 1000}, 0.79, "the reference") is None
    # 0.62 of 100 images: its upper 95% bound (~0.72) is within 15 points of 0.79, so it is not refused
    assert health.reference_failure({"clean_accuracy": 0.62, "eval_images": 100}, 0.79, "the reference") is None


def test_a_models_identity_is_its_content_not_its_path_or_name():
    common = {"role": "adv", "dataset": "cifar10", "state_sha256": "ab" * 32}
    ckpt = identity("checkpoint", arch="resnet18", raw=False, **common)
    assert not any("/" in str(v) for v in ckpt.values())  # no path in the key: a moved file is the same model
    assert identity("checkpoint", arch="resnet18", raw=True, **common) != ckpt  # another normalisation inside
    assert identity("checkpoint", arch="preact_resnet18", **common) != ckpt
    assert identity("checkpoint", arch="resnet18", **{**common, "state_sha256": "cd" * 32}) != ckpt
    entry = identity("entry_point", entry="mine:load", code_sha256="1" * 64, **common)
    assert identity("entry_point", entry="mine:load", code_sha256="2" * 64, **common) != entry  # other code
    assert identity("entry_point", entry="mine:other", code_sha256="1" * 64, **common) != entry


def _validate(tmp_path, **options):
    return validate_options({"--repro-budget": "smoke", **options}, storage=tmp_path, cuda_count=0, workers=1,
                            cpu_count=2)


def test_a_stage_map_or_published_accuracy_for_a_role_without_a_model_is_one_usage_error(tmp_path):
    for option, value in (("--repro-stages", f"adv={STAGE_MAP}"), ("--repro-published", "adv=0.8")):
        with pytest.raises(pytest.UsageError) as err:
            _validate(tmp_path, **{option: [value]})
        text = str(err.value)
        assert "\n" not in text and "no --repro-model gives role adv" in text and "--repro-model adv=SPEC" in text
        with pytest.raises(pytest.UsageError, match="no --repro-model gives role adv on mnist"):
            _validate(tmp_path, **{"--repro-model": ["adv@cifar10=mine"], option: [value.replace("adv", "adv@mnist")]})
        with pytest.raises(pytest.UsageError, match="no --repro-model gives role std"):
            _validate(tmp_path, **{"--repro-model": ["adv=mine"], option: [value.replace("adv", "std")]})
        # the model's role on every dataset, or on the dataset the stage map names: used
        _validate(tmp_path, **{"--repro-model": ["adv=mine"], option: [value.replace("adv", "adv@cifar10")]})
        _validate(tmp_path, **{"--repro-model": ["adv@cifar10=mine"], option: [value]})


def test_published_accuracies_parse_and_refuse_in_one_line():
    assert published_accuracies(["adv=0.849,0.519", "std@cifar10=0.95"]) == {
        "adv": {"clean": 0.849, "robust": 0.519}, "std@cifar10": {"clean": 0.95}}
    for bad in ("adv=1.2", "adv=x", "adv=0.1,0.2,0.3", "adv=", "adv", "nope=0.5", "adv@nowhere=0.5", "adv=-0.1"):
        with pytest.raises(pytest.UsageError) as err:
            published_accuracies([bad])
        assert "\n" not in str(err.value) and "--repro-published" in str(err.value)
    with pytest.raises(pytest.UsageError, match="given twice"):
        published_accuracies(["adv=0.8", "adv=0.7"])


def test_an_error_row_keeps_a_one_line_user_error_whole_and_cuts_any_other():
    long = "a stage map to pass: " + ", ".join(f"layer{i}:body.{i}" for i in range(60))  # past ERROR_CHARS
    assert len(long) > ERROR_CHARS
    for error, whole in ((external.StagesMissing(long), True), (health.ModelUnhealthy(long), True),
                         (RuntimeError(long), False)):
        with pytest.raises(type(error)) as info:
            raise error
        line = error_line(info, None)
        assert (long in line) is whole and line.startswith(type(error).__name__)
        if not whole:
            assert long[:ERROR_CHARS] in line and "(at test_own_models.py:" in line


def test_any_exception_of_an_instance_is_an_error_row_and_counted(claim_project, tmp_path):
    pytester = claim_project()
    pytester.makepyfile(test_claim=textwrap.dedent('''
        import pytest
        from advclaims.plugin import on_datasets

        @pytest.fixture
        def dataset(request):
            return request.param

        @pytest.mark.claim("LP-7")
        @on_datasets("cifar10", "fashion_mnist")
        def test_claim(dataset, check):
            if dataset == "cifar10":
                {}["a key nobody set"]   # any exception, not one the suite knows
            raise ZeroDivisionError("in the body")
    '''))
    result = pytester.runpytest(f"--repro-report={tmp_path / 'r'}")
    result.assert_outcomes(failed=2)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    rows = {r["dataset"]: r for r in report["claims"]}
    assert rows["cifar10"]["error"].startswith("KeyError: 'a key nobody set' (at test_claim.py:")
    assert rows["fashion_mnist"]["error"].startswith("ZeroDivisionError: in the body")
    assert {r["outcome"] for r in rows.values()} == {"error"} and report["summary"]["errors"] == 2
    md = (tmp_path / "r" / "report.md").read_text()
    assert "2 raised an error" in md and md.count("| error |") == 2
    assert "2 of 2 instances raised an error" in result.stdout.str()


# ---------------------------------------------------------------------------------------------
# through the pipeline, the CLI and pytest runs, on the suite's smoke models exported as a user's files

USER_MODULE = '''
import os
import torch
from torch import nn
from advclaims import data, models

class TinyFashionNet(nn.Module):
    """The user's layout: a ResNet-18 kept under .inner, its weights read from one fixed file."""
    def __init__(self, state):
        super().__init__()
        meta = data.info("fashion_mnist")
        self.inner = models.build("resnet18", in_channels=1, num_classes=10, width=state["conv1.weight"].shape[0],
                                  mean=meta.mean, std=meta.std)
        self.inner.load_state_dict(state)
    def forward(self, x):
        return self.inner(x)

class Fails(TinyFashionNet):
    def forward(self, x):
        if len(x) > 2:
            raise RuntimeError("this model breaks on batches of more than two images")
        return self.inner(x)

class Permuted(TinyFashionNet):   # classes 0-5 in another order
    def forward(self, x):
        return self.inner(x)[:, [1, 0, 3, 2, 5, 4, 6, 7, 8, 9]]

class TwoSwapped(TinyFashionNet):  # two pairs of classes in another order: about 40 points lost
    def forward(self, x):
        return self.inner(x)[:, [9, 8, 2, 3, 4, 5, 6, 7, 1, 0]]

class Unnormalised(nn.Module):    # trained on normalised input, with no normalisation inside
    def __init__(self, state):
        super().__init__()
        self.inner = models.build("resnet18", in_channels=1, num_classes=10, width=state["conv1.weight"].shape[0],
                                  mean=(0.0,), std=(1.0,))
        own = self.inner.state_dict()  # its identity normalisation replaces the one the weights were trained with
        self.inner.load_state_dict({**state, "normalize.mean": own["normalize.mean"], "normalize.std": own["normalize.std"]})
    def forward(self, x):
        return self.inner(x)

def _state():
    return torch.load(os.path.join(os.path.dirname(__file__), "weights.pt"), weights_only=True)

def load():
    return TinyFashionNet(_state())

def fails():
    return Fails(_state())

def permuted():
    return Permuted(_state())

def unnormalised():
    return Unnormalised(_state())

def two_swapped():
    return TwoSwapped(_state())

def plain():   # the registry's ResNet-18 with these weights: the same state dict as the checkpoint
    meta = data.info("fashion_mnist")
    state = _state()
    net = models.build("resnet18", in_channels=1, num_classes=10, width=state["conv1.weight"].shape[0],
                       mean=meta.mean, std=meta.std)
    net.load_state_dict(state)
    return net
'''


def _fashion_mnist_or_skip():
    try:
        data.read_arrays("fashion_mnist", "test", data.default_root(), limit=1)
    except data.DatasetMissing as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def own_store(tmp_path_factory, suite_models_into):
    """This module's store: its tests import, measure and attack in it, never in the shared one. The suite's STD
    and ADV ResNet-18 of Fashion-MNIST at smoke (seed 0) are copied in from the shared store (trained there first if
    missing, each once however many workers ask: conftest.suite_models_into)."""
    _fashion_mnist_or_skip()
    store = Store(tmp_path_factory.mktemp("store"))
    suite_models_into(store, [("std", 0), ("adv", 0)])
    return store


@pytest.fixture(scope="module")
def suite_models(own_store):
    """The STD and ADV ResNet-18 the claims train on Fashion-MNIST at smoke (seed 0): the two weights a user swaps
    behind one file (one layout, clearly other accuracies: ADV's PGD-20 accuracy is some 0.6 against STD's 0.02,
    its clean accuracy within the reference probe's reach); STD is the reference probe's STD of the role."""
    pipe = Pipeline(budget="smoke", store=own_store, progress=False)
    return {"std0": pipe.model("std", "fashion_mnist", seed=0), "adv0": pipe.model("adv", "fashion_mnist", seed=0)}


@pytest.fixture
def user_dir(tmp_path, monkeypatch, suite_models):
    """A user's folder: user_layout.py (on sys.path and PYTHONPATH) reading weights.pt; ``put(which)`` writes one
    of ``suite_models`` into weights.pt. A user_layout module an earlier test imported (from its own folder) is
    forgotten first."""
    sys.modules.pop("user_layout", None)
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "user_layout.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

    def put(which):
        torch.save(suite_models[which].module.state_dict(), folder / "weights.pt")

    return SimpleNamespace(path=folder, put=put)


HF3 = ("claims/test_high_frequency.py", "high_frequency_part_of_a_perturbation")
LP7 = ("claims/test_local_properties.py", "fgsm_is_weaker_than_pgd20")
LP8 = ("claims/test_local_properties.py", "larger_local_response_differences")


def _claims(*args, report: Path, claim=HF3, ok=(0,)) -> tuple[dict, str]:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / claim[0]), "-m", "fashion_mnist", "-p", "no:xdist",
           "-p", "no:cacheprovider", "-q", "--repro-budget", "smoke", "--repro-seeds", "1", "--repro-quiet",
           "--repro-report", str(report), "-k", claim[1], *args]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200, env=dict(os.environ))
    assert run.returncode in ok, run.stdout[-3000:] + run.stderr[-2000:]
    return json.loads((report / "report.json").read_text()), run.stdout


def _sets_of(store: Store, key: str) -> set[str]:
    """The store entries made on the model ``key`` (adversarial and targeted sets, IB's, curvature's)."""
    return {p.stem for p in store.root.glob("*/*.json") if json.loads(p.read_text())["spec"].get("model") == key}


@pytest.mark.slow
def test_other_weights_behind_one_entry_point_are_another_model(user_dir, suite_models, own_store, tmp_path):
    store = own_store  # the reference probe reads the suite's own STD there (no published accuracy is given)
    cache = ("--repro-cache", str(store.root))
    user_dir.put("std0")
    first, _ = _claims("--repro-model", "std=user_layout:load", *cache, report=tmp_path / "first")
    user_dir.put("adv0")  # same module, same path, other weights
    second, out = _claims("--repro-model", "std=user_layout:load", *cache, report=tmp_path / "second")
    [a, ref_a], [b, ref_b] = (sorted(r["models"], key=lambda m: m.get("reference_for") is not None)
                              for r in (first, second))
    assert a["key"] != b["key"] and a["source"]["state_sha256"] != b["source"]["state_sha256"]
    assert a["source"]["sha256"] == b["source"]["sha256"]  # the code did not change: the weights did
    assert b["source"]["weights"] == [external.weights_file(user_dir.path / "weights.pt")]
    assert a["pgd20_accuracy"] == pytest.approx(suite_models["std0"].metrics["pgd20_accuracy"])
    assert b["clean_accuracy"] == pytest.approx(suite_models["adv0"].metrics["clean_accuracy"])
    assert b["pgd20_accuracy"] == pytest.approx(suite_models["adv0"].metrics["pgd20_accuracy"])
    sets_a, sets_b = _sets_of(store, a["key"]), _sets_of(store, b["key"])
    assert sets_a and sets_b and not sets_a & sets_b  # the targeted PGD-20 set, made on each model
    assert first["claims"][0]["outcome"] == second["claims"][0]["outcome"] == "own model"
    md = (tmp_path / "second" / "report.md").read_text()
    assert str((user_dir.path / "weights.pt").resolve()) in md and f"{b['clean_accuracy']:.4g}" in md
    assert "held against the suite's own STD resnet18 at the smoke budget" in out
    # the reference the probe used is named: in the terminal (with its key, loaded here) and in the model table
    ref_key = suite_models["std0"].key
    assert f"store key {ref_key}, loaded from the store) by the health gate's reference probe" in out
    assert ref_a["key"] == ref_b["key"] == ref_key and ref_b["reference_for"] and not ref_b["used_by"]
    assert ref_b["clean_accuracy"] == pytest.approx(suite_models["std0"].metrics["clean_accuracy"])
    assert f"the reference probe of {b['label']} (loaded from the store)" in md


@pytest.mark.slow
def test_reimporting_a_name_with_other_weights_refuses_then_replaces(user_dir, suite_models, tmp_path, capsys):
    cache = str(tmp_path / "store")  # a store of its own: the published accuracy is the reference, nothing trains
    args = ["import", "user_layout:load", "--role", "std", "--dataset", "fashion_mnist", "--name", "mine",
            "--published-clean", "0.8", "--cache", cache]
    user_dir.put("std0")
    assert cli(args) == 0
    first, _ = _claims("--repro-model", "std=mine", "--repro-cache", cache, report=tmp_path / "first")
    user_dir.put("adv0")
    capsys.readouterr()
    assert cli(args) == 2
    refusal = capsys.readouterr().err.strip()
    assert "\n" not in refusal and "already imported" in refusal and "other weights" in refusal \
        and "--replace" in refusal
    assert cli([*args, "--replace"]) == 0
    second, _ = _claims("--repro-model", "std=mine", "--repro-cache", cache, report=tmp_path / "second")
    [a], [b] = first["models"], second["models"]
    assert a["key"] != b["key"] and b["source"]["name"] == "mine"
    assert a["clean_accuracy"] == pytest.approx(suite_models["std0"].metrics["clean_accuracy"])
    assert b["clean_accuracy"] == pytest.approx(suite_models["adv0"].metrics["clean_accuracy"])
    store = Store(cache)
    sets_a, sets_b = _sets_of(store, a["key"]), _sets_of(store, b["key"])
    assert sets_a and sets_b and not sets_a & sets_b
    assert not (Path(cache) / "models").exists()  # the published accuracy was the reference: nothing trained


@pytest.mark.slow
def test_lp8_on_a_users_layout_is_an_error_row_without_a_stage_map_and_a_verdict_with_one(user_dir, own_store,
                                                                                           tmp_path):
    user_dir.put("adv0")  # the user's model in the adv role; LP-8's STD partner is the suite's own
    assert cli(["import", "user_layout:load", "--role", "adv", "--dataset", "fashion_mnist", "--name",
                "test-own-layout", "--published-clean", "0.8", "--replace", "--cache", str(own_store.root)]) == 0
    given = ("--repro-model", "adv=test-own-layout", "--repro-cache", str(own_store.root))
    without, out = _claims(*given, claim=LP8, report=tmp_path / "without", ok=(1,))
    [row] = without["claims"]
    assert row["claim"] == "LP-8" and row["outcome"] == "error" and without["summary"]["errors"] == 1
    assert "StagesMissing" in row["error"] and "--repro-stages adv=conv1:MODULE" in row["error"]
    assert "layer4" in row["error"].split("--repro-stages")[0]  # the whole line: every stage it reads is named
    md = (tmp_path / "without" / "report.md").read_text()
    assert "| LP-8 |" in md and "1 raised an error" in md
    with_map, out = _claims(*given, "--repro-stages", f"adv={STAGE_MAP}", claim=LP8, report=tmp_path / "with")
    [row] = with_map["claims"]
    assert row["outcome"] == "own model" and row["error"] is None and row["unmeasurable"] is None
    assert all(c["value"] is not None for c in row["checks"]) and len(row["tables"]["table1"]) == 6  # every stage
    assert "compared your model with the suite's own STD" in out  # the partner the suite trained, named


@pytest.mark.slow  # ~35 s on a loaded machine (a pytest run in a subprocess)
def test_an_instance_whose_model_breaks_in_the_pipeline_is_an_error_row(user_dir, own_store, tmp_path):
    user_dir.put("std0")
    report, _ = _claims("--repro-model", "std=user_layout:fails", "--repro-cache", str(own_store.root),
                        report=tmp_path / "r", ok=(1,))
    [row] = report["claims"]
    assert row["outcome"] == "error" and row["error"].startswith("RuntimeError: this model breaks on batches")
    assert report["summary"]["errors"] == 1 and report["summary"]["total"] == 1
    assert "RuntimeError" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.slow  # ~10 s alone, 35 s on a loaded machine: PGD-20 on 1000 images for the health gate
@pytest.mark.parametrize("entry, probe", [("user_layout:permuted", "reference probe:"),
                                          ("user_layout:unnormalised", "probe:")])
def test_a_wrong_class_order_or_pixel_range_is_refused(user_dir, own_store, entry, probe):
    user_dir.put("std0")
    pipe = Pipeline(budget="smoke", store=own_store, progress=False)  # the suite's STD there is the reference
    with pytest.raises(health.ModelUnhealthy) as err:
        pipe.import_model(entry, "std", "fashion_mnist", name="wrong")
    text = str(err.value)
    print(text)
    assert "\n" not in text and probe in text and "normalises inside its forward" in text
    assert "classes are in the dataset's order" in text


@pytest.mark.slow  # ~1 min on a loaded machine: one subprocess run, the refusal before any attack
def test_a_class_order_between_the_floor_and_the_reference_is_refused_by_the_reference_probe_alone(
        user_dir, own_store, tmp_path):
    # two pairs of classes swapped: about 40% clean, far above the smoke floor (19%) and chance, far below the
    # published 80%: only the reference probe can catch it
    user_dir.put("std0")
    report, out = _claims("--repro-model", "std=user_layout:two_swapped", "--repro-published", "std=0.8",
                          "--repro-cache", str(own_store.root), report=tmp_path / "r", ok=(1,))
    [row] = report["claims"]
    error = row["error"]
    assert row["outcome"] == "error" and error.startswith("ModelUnhealthy: model STD (user_layout:two_swapped)")
    assert "reference probe:" in error and "below its published clean accuracy 80.0%" in error
    assert "chance probe" not in error and "floor probe" not in error
    clean = float(error.split("reference probe: clean accuracy ")[1].split("%")[0]) / 100
    assert 0.19 < clean < 0.8 - 0.15
    assert error.endswith("Its source: user_layout:two_swapped; nothing of it is used until it passes.")  # whole
    assert report["summary"]["errors"] == 1 and report["summary"]["held"] == 0  # not held against expected/


@pytest.mark.slow  # two measurements of the model (PGD-20 on the evaluation images)
def test_an_imported_entry_point_whose_module_changed_is_another_model_measured_anew(user_dir, own_store,
                                                                                      monkeypatch):
    user_dir.put("std0")
    pipe = Pipeline(budget="smoke", store=own_store, progress=False)
    pipe.import_model("user_layout:load", "std", "fashion_mnist", name="changing", published={"clean": 0.8})
    before = Pipeline(budget="smoke", store=own_store, progress=False).external("changing", "std", "fashion_mnist",
                                                                               label="STD")
    # the same weights, other code: load() now swaps two small classes (about 9 points lost)
    module = user_dir.path / "user_layout.py"
    module.write_text(USER_MODULE.replace("class Unnormalised", '''class SwapsTwo(TinyFashionNet):
    def forward(self, x):
        return self.inner(x)[:, [0, 1, 2, 3, 6, 5, 4, 7, 8, 9]]

class Unnormalised''').replace("return TinyFashionNet(_state())", "return SwapsTwo(_state())"))
    monkeypatch.delitem(sys.modules, "user_layout")  # a new run imports the module anew
    store = Store(own_store.root)
    after = Pipeline(budget="smoke", store=store, progress=False).external("changing", "std", "fashion_mnist",
                                                                          label="STD")
    assert after.source["state_sha256"] == before.source["state_sha256"]  # the weights did not change
    assert after.key != before.key and after.source["sha256"] == external.file_sha256(module)
    assert after.source["sha256_at_import"] == before.source["sha256"] and "module changed" in after.source["measured"]
    assert after.metrics["clean_accuracy"] < before.metrics["clean_accuracy"] - 0.05  # measured anew, not kept
    assert any(k in store.made for k in (p.stem for p in (own_store.root / "external").glob("*.pt")))
    again = Store(own_store.root)  # a third run: the measurement is stored, the key the same
    assert Pipeline(budget="smoke", store=again, progress=False).external(
        "changing", "std", "fashion_mnist", label="STD").key == after.key and not again.made


@pytest.mark.slow  # one measurement of the model; the rest loads
def test_a_checkpoint_moved_or_imported_under_a_name_is_one_model(suite_models, own_store, tmp_path):
    old = tmp_path / "old" / "m.pt"
    old.parent.mkdir()
    torch.save(suite_models["std0"].module.state_dict(), old)

    def run(given, store=None):
        pipe = Pipeline(budget="smoke", store=store or Store(own_store.root), progress=False,
                        published={"std": {"clean": 0.8}})
        return pipe.external(given, "std", "fashion_mnist", label="STD"), pipe.store

    first, _ = run(f"resnet18:{old}")
    new = tmp_path / "new" / "renamed.pt"
    new.parent.mkdir()
    old.rename(new)
    second, store = run(f"resnet18:{new}")
    assert second.key == first.key and not store.made  # nothing measured or attacked anew
    assert second.source["weights"] == [external.weights_file(new)] and second.source["spec"] == f"resnet18:{new}"
    assert second.source["reference"]["what"] == "its published clean accuracy"  # --repro-published feeds it
    assert second.source["published"] == {"clean": 0.8}
    cli_store = str(own_store.root)
    assert cli(["import", f"resnet18:{new}", "--role", "std", "--dataset", "fashion_mnist", "--name", "one-model",
                "--published-clean", "0.8", "--cache", cli_store]) == 0
    named, _ = run("one-model")
    assert named.key == first.key  # imported under a name: the same content, the same model


@pytest.mark.slow  # one import measured; the re-imports are not
def test_reimporting_the_same_weights_from_elsewhere_updates_the_provenance_in_one_line(user_dir, suite_models,
                                                                                         own_store, tmp_path, capsys):
    old = tmp_path / "old.pt"
    torch.save(suite_models["std0"].module.state_dict(), old)
    args = ["--role", "std", "--dataset", "fashion_mnist", "--name", "moving", "--published-clean", "0.8",
            "--cache", str(own_store.root)]
    assert cli(["import", f"resnet18:{old}", *args]) == 0
    new = tmp_path / "moved" / "new.pt"
    new.parent.mkdir()
    old.rename(new)  # the old file is gone: the store must not name it any longer
    capsys.readouterr()
    assert cli(["import", f"resnet18:{new}", *args]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("advclaims import:")]
    assert f"imported from resnet18:{old}" in line and f"its provenance now names resnet18:{new}" in line
    assert "accuracies measured at import are kept" in line
    model = Pipeline(budget="smoke", store=Store(own_store.root), progress=False).external(
        "moving", "std", "fashion_mnist", label="STD")
    assert model.source["spec"] == f"resnet18:{new}" and model.source["weights"] == [external.weights_file(new)]
    assert str(old) not in json.dumps(model.source)
    assert cli(["import", f"resnet18:{new}", *args]) == 0
    assert "nothing changed" in capsys.readouterr().out
    # the same weights behind other code (an entry point) are another model: refused without --replace
    user_dir.put("std0")
    assert cli(["import", "user_layout:plain", *args]) == 2
    refusal = capsys.readouterr().err.strip()
    assert "\n" not in refusal and "the same weights behind other code" in refusal and "--replace" in refusal
