"""Issue 24 on the CPU: what the first GPU night needs, shown without a GPU (a mocked ``torch.cuda``, a "cuda"
Pipeline that never touches the device, CPU equivalents). scripts/gpu_check.sh covers what only a GPU shows."""

import contextlib
import warnings

import pytest
import torch

from advclaims import accel

from advclaims.checkpoints import distributed

from advclaims.checkpoints import training
from advclaims.analysis.curvature import defence, subspaces
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.checkpoints import keys
from advclaims.checkpoints.store import Store, key_of


@pytest.fixture(autouse=True)
def _restore_backends():
    """resolve() on "cuda" sets process-wide flags: put them back for the tests after."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    precision = accel.tf32_settings()
    recorded = accel.fp32_precision_set()
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
    for name, backend in accel._fp32_precision_backends().items():  # the cuDNN parent first, as set_tf32 does
        backend.fp32_precision = precision[name]
    accel._FP32_PRECISION_SET.clear()
    accel._FP32_PRECISION_SET.update(recorded)


# -- 1. resume: loaded on the CPU whatever the training device ------------------------------------------------

def test_a_resume_state_loads_for_a_cuda_run_with_cpu_generator_states(tmp_path, monkeypatch):
    identity = {"recipe": {}, "seed": 3, "world": 1, "precision": "bf16", "images": 8, "format": training.RESUME_FORMAT}
    g = torch.Generator().manual_seed(3)
    payload = {"identity": identity, "generator": g.get_state(),
               "rng": {"torch": torch.get_rng_state(), "cuda": torch.get_rng_state()}}
    path = tmp_path / "x.resume.pt"
    torch.save(payload, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # map_location="cuda" here would fail to load and be ignored with a warning
        state = training._load_resume(path, identity, torch.device("cuda"))
    assert state is not None
    assert state["generator"].device.type == "cpu" and state["generator"].dtype == torch.uint8
    torch.Generator().set_state(state["generator"])  # what _train does: a ByteTensor on the CPU is accepted
    seen = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: seen.append((s.device.type, s.dtype)))
    training._set_rng_state(state["rng"], torch.device("cuda"))
    assert seen == [("cpu", torch.uint8)]


# -- 2. store keys: what changes the numbers ---------------------------------------------------------------------

def _pipe(tmp_path, device="cpu", **settings) -> Pipeline:
    acc = accel.resolve(device, settings.pop("precision", "fp32"), settings.pop("compile", False), **settings)
    return Pipeline(budget="smoke", store=Store(tmp_path), device=device, accel=acc, progress=False)


def test_every_store_spec_comes_from_the_one_builder_with_its_version_and_precision(tmp_path):
    pipe = Pipeline(budget="smoke", store=Store(tmp_path), device="cpu", progress=False)
    spec = pipe.model_spec("std", "fashion_mnist", arch="lenet")
    assert set(spec) == {"arch", "width", "dataset", "role", "train_images", "budget", "seed", "recipe", "precision",
                         "version"}
    assert spec["version"] == keys.VERSIONS["models"] and spec["precision"] == "fp32"
    attack = pipe.spec_of("adversarial", {"model": "k"})
    assert attack == {"model": "k", "version": keys.VERSIONS["adversarial"], "precision": "fp32"}
    assert pipe.spec_of("imported", {"imported": "n"}, settings=False) == {"imported": "n", "version": 1}
    with pytest.raises(KeyError, match="unknown store kind"):
        pipe.spec_of("nonsense", {})
    with pytest.raises(ValueError, match="the key builder adds them"):
        pipe.spec_of("adversarial", {"precision": "bf16"})


@pytest.mark.parametrize("settings, field", [
    ({"compile": True}, "compile"), ({"device": "cuda", "deterministic": True}, "deterministic"),
    ({"device": "cuda", "tf32": True}, "tf32")])
def test_model_keys_differ_by_compile_deterministic_and_tf32(tmp_path, settings, field):
    device = settings.pop("device", "cpu")
    base = _pipe(tmp_path, device).model_spec("adv", "fashion_mnist")
    other = _pipe(tmp_path, device, **settings).model_spec("adv", "fashion_mnist")
    assert other[field] is True and key_of(other) != key_of(base)
    assert {k: v for k, v in other.items() if k != field} == base


def test_cuda_fp32_is_full_precision_unless_tf32_is_asked_for(tmp_path):
    acc = accel.resolve("cuda", "fp32", False)
    assert not acc.tf32 and accel.tf32_settings() == dict.fromkeys(accel.FP32_PRECISION_FLAGS, "ieee")
    assert "tf32" not in _pipe(tmp_path, "cuda").model_spec("std", "fashion_mnist")
    acc = accel.resolve("cuda", "fp32", False, tf32=True)
    assert acc.tf32 and accel.tf32_settings()["cudnn_conv"] == "tf32"
    assert not accel.resolve("cpu", tf32=True).tf32  # the CPU has no TF32: never keyed there


def _attack_fields(pipe) -> dict:
    return {k: v for k, v in pipe.spec_of("adversarial", {}).items() if k != "version"}


def test_attack_set_keys_carry_precision_deterministic_and_tf32_but_not_compile(tmp_path):
    assert _attack_fields(_pipe(tmp_path, compile=True)) == {"precision": "fp32"}  # attacks run eagerly
    assert _attack_fields(_pipe(tmp_path, "cuda", deterministic=True)) == {"precision": "fp32", "deterministic": True}
    # the CPU's kernels are deterministic either way: a CPU --repro-deterministic run reuses the stored models
    assert _pipe(tmp_path, deterministic=True).model_spec("std", "fashion_mnist") == \
        _pipe(tmp_path).model_spec("std", "fashion_mnist")
    assert _attack_fields(_pipe(tmp_path, "cuda", precision="bf16", tf32=True)) == {"precision": "bf16", "tf32": True}


def test_world_size_is_keyed_only_where_batchnorm_statistics_are_per_rank(tmp_path, monkeypatch):
    pipe = _pipe(tmp_path)
    single_resnet = pipe.model_spec("adv", "fashion_mnist", arch="resnet18")
    single_lenet = pipe.model_spec("std", "fashion_mnist", arch="lenet")
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    ddp_resnet = pipe.model_spec("adv", "fashion_mnist", arch="resnet18")
    assert ddp_resnet["world"] == 2 and key_of(ddp_resnet) != key_of(single_resnet)  # gloo: no SyncBatchNorm
    assert pipe.model_spec("std", "fashion_mnist", arch="lenet") == single_lenet     # no BatchNorm: one model
    cuda = _pipe(tmp_path, "cuda")  # CUDA DDP trains with SyncBatchNorm: the same model as one process
    assert "world" not in cuda.model_spec("adv", "fashion_mnist", arch="resnet18")


# -- 3. deterministic mode: warn_only only where no deterministic kernel exists ------------------------------------

def test_resampling_backward_runs_warn_only_and_matches_plain_autograd():
    net = defence.Resampled(torch.nn.Flatten(), side=5)
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    (expected,) = torch.autograd.grad(defence._bicubic_resample(x, 5).square().sum(), x)
    seen = []
    original = accel.nondeterministic_allowed

    @contextlib.contextmanager
    def spy():
        with original():
            seen.append(torch.is_deterministic_algorithms_warn_only_enabled())
            yield

    torch.use_deterministic_algorithms(True)
    defence.nondeterministic_allowed = spy
    try:
        (got,) = torch.autograd.grad(net(x).square().sum(), x)
    finally:
        defence.nondeterministic_allowed = original
    assert seen == [True]                                             # backward ran under warn_only
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.equal(got, expected)


def test_the_report_lists_the_kernel_without_a_deterministic_version(tmp_path):
    d = accel.determinism(accel.Accel(torch.device("cuda"), deterministic=True), threads=1)
    assert any("interpolate" in op for op in d["nondeterministic"])
    fast = accel.determinism(accel.Accel(torch.device("cuda")), threads=1)["nondeterministic"]
    assert not any("adaptive" in op or "augmentation" in op for op in fast)  # not in it: a mean, never differentiated


# -- 5. CV-7's saliency and FGSM on 10,000 images in batches -------------------------------------------------------

class _Counting(torch.nn.Module):
    """A linear classifier that records the largest batch it is given (peak activations scale with it)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 3)
        self.largest = 0

    def forward(self, x):
        self.largest = max(self.largest, x.shape[0])
        return self.fc(x.flatten(1))


def test_saliency_and_fgsm_on_10000_images_run_in_bounded_batches():
    torch.manual_seed(0)
    net, x = _Counting(), torch.rand(10_000, 1, 4, 4)
    y = torch.randint(0, 3, (10_000,))
    sal = subspaces.saliency(net, x, batch=256)
    assert net.largest == 256
    net.largest = 0
    step = subspaces.fgsm_directions(net, x, y, eps=0.1, batch=256)
    assert net.largest == 256
    xg = x[:300].clone().requires_grad_(True)
    logits = net.fc(xg.flatten(1))
    (whole,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), xg)
    assert torch.allclose(sal[:300], whole, atol=1e-6)
    assert step.abs().max() <= 0.1 + 1e-6 and tuple(step.shape) == tuple(x.shape)


# -- 6. the models a selection needs -----------------------------------------------------------------------------

def test_advclaims_models_lists_the_sweep_and_every_seed(capsys):
    from advclaims import cli

    assert cli.main(["models", "--json", "--", "claims/test_local_properties.py", "-m", "fashion_mnist",
                     "--repro-budget", "fast", "--repro-seeds", "2"]) == 0
    import json
    listing = json.loads(capsys.readouterr().out)
    models = listing["models"]
    assert listing["budget"] == "fast"
    sweep = {(m["weight_decay"], m["seed"]) for m in models if m["role"] == "adv" and m["arch"] == "resnet18"}
    assert sweep == {(wd, s) for wd in (1e-4, 5e-4, 1e-3, 5e-3) for s in (0, 1)}
    assert all(m["trainable"] for m in models)
    assert len({(m["dataset"], m["role"], m["arch"], m["seed"], m["weight_decay"]) for m in models}) == len(models)


# -- 2b. LP-4's extension of a set: keyed and attacked as Pipeline.adversarial, labelled truthfully -----------------

def _lenet_model():
    from advclaims import models
    from advclaims.checkpoints.artifacts import TrainedModel

    torch.manual_seed(0)
    net = models.build("lenet", in_channels=1, num_classes=10, input_size=28).eval()
    return TrainedModel("STD", net, {"arch": "lenet"}, "k" * 20, {}, False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_spectrum_extension_is_keyed_and_attacked_as_the_pipelines_sets(tmp_path, monkeypatch, precision):
    from advclaims import data as data_mod
    from advclaims.checkpoints import pipeline as pipeline_mod
    from advclaims.checkpoints.artifacts import AdversarialSet, attack_params

    local_properties = pytest.importorskip("fixtures.local_properties")
    pipe = _pipe(tmp_path, precision=precision)
    try:
        bundle = pipe.dataset("fashion_mnist")
    except data_mod.DatasetMissing as err:
        pytest.skip(str(err))
    x, y = bundle.test.images(slice(0, 4)), bundle.test.y[:4]
    base = AdversarialSet("pgd20", attack_params("pgd20", bundle.info.eps), "STD", x, x, y, {"model": "base"})
    autocast = []
    real = pipeline_mod.attack_batched
    monkeypatch.setattr(pipeline_mod, "attack_batched",
                        lambda *a, **k: autocast.append(torch.is_autocast_enabled("cpu")) or real(*a, **k))
    mixed = local_properties._at_least(pipe, bundle, _lenet_model(), base, 6)
    assert autocast == [precision == "bf16"] and len(mixed.y) == 6   # attacked through Pipeline.attack_images
    base_spec, extension = mixed.spec["parts"]
    assert base_spec == base.spec and mixed.spec["images"] == [0, 6]  # the mixed set names both of its parts
    assert set(extension) == {"model", "attack", "params", "dataset", "images", "seed", "version", "precision"}
    assert extension["precision"] == precision and extension["version"] == pipe.spec_of("adversarial", {})["version"]


# -- 6b. compiled training: the partial last batch is dropped, and the compile counters are reported ---------------

def test_compiled_training_drops_the_partial_last_batch_and_reports_no_recompile(monkeypatch):
    import functools

    from advclaims import data as data_mod
    from advclaims import models

    monkeypatch.setattr(accel.torch, "compile", functools.partial(torch.compile, backend="eager"))  # no C compiler
    g = torch.Generator().manual_seed(0)
    split = data_mod.Split("synthetic", torch.randint(0, 256, (300, 1, 28, 28), generator=g, dtype=torch.uint8),
                           torch.randint(0, 10, (300,), generator=g))
    recipe = training.Recipe("standard", epochs=1, augment=False)

    def run(compiled: bool) -> dict:
        torch.manual_seed(0)
        net = models.build("lenet", in_channels=1, num_classes=10, input_size=28)
        return training.train(net, split, recipe, seed=0, progress=False,
                              accel=accel.Accel(torch.device("cpu"), compile=compiled))

    assert run(False)["steps"] == 3                      # eager: 128 + 128 + 44, every image
    torch._dynamo.reset()
    compiled = run(True)
    assert compiled["steps"] == 2                        # compiled: the 44-image batch would recompile; dropped
    assert compiled["compile"]["recompiles"] == 0 and compiled["compile"]["eager_fallbacks"] == 0


# -- 4. each xdist worker's GPU is its current device ------------------------------------------------------------

def test_a_pinned_worker_makes_its_gpu_the_current_device(monkeypatch):
    from advclaims.plugin import options

    current = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: current.append(str(dev)))
    assert str(options.worker_device(torch.device("cuda"), "gw1")) == "cuda:1" and current == ["cuda:1"]
    assert str(options.worker_device(torch.device("cpu"), "gw1")) == "cpu" and current == ["cuda:1"]  # CPU: nothing


# -- 3b. full fp32 through the new fp32_precision API only, for every op that has the choice, and recorded ----------

def test_full_fp32_is_set_for_convolutions_rnns_and_matmuls_through_the_new_api_and_recorded():
    from advclaims.verdict import report

    full = dict.fromkeys(("cudnn", "cudnn_conv", "cudnn_rnn", "cuda_matmul"), "ieee")
    assert accel.set_tf32(False) == full == accel.tf32_settings() == accel.fp32_precision_set()
    d = accel.determinism(accel.resolve("cuda", "fp32", False), threads=1)   # resolve sets it, the report shows it
    assert d["fp32_precision"] == full
    assert "  - fp32 precision (CUDA): cudnn ieee, cudnn_conv ieee, cudnn_rnn ieee, cuda_matmul ieee" in \
        report._determinism_lines(d)
    assert accel.set_tf32(True) == dict.fromkeys(full, "tf32") == accel.tf32_settings()
    assert "fp32_precision" not in accel.determinism(accel.resolve("cpu"), threads=1)  # the CPU has no TF32


def test_no_code_of_the_suite_reads_or_writes_the_legacy_tf32_flags():
    """torch refuses to read cudnn.allow_tf32 once the new API has set a precision (mixing the two raises), so the
    library and the GPU scripts use fp32_precision alone."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    legacy = ("allow_tf32", "set_float32_matmul_precision", "get_float32_matmul_precision")
    files = [*root.joinpath("lib", "advclaims").rglob("*.py"), *root.joinpath("scripts").glob("*")]
    offending = [f"{f.relative_to(root)}: {name}" for f in files if f.is_file()
                 for name in legacy if name in f.read_text(errors="replace")]
    assert offending == []


# -- 2c. the report's list of non-deterministic CUDA operations, checked against torch's own list -------------------

# library calls torch.use_deterministic_algorithms names, with the name it uses there; the suite's list must carry
# each one unless exempted here with the reason it is deterministic where the suite calls it
_TORCH_LISTED_CALLS = {".gather(": "torch.gather", ".index_add_(": "torch.index_add",
                       "interpolate(": "torch.nn.functional.interpolate", ".scatter_add_(": "torch.Tensor.scatter_add_",
                       ".index_select(": "torch.index_select", "repeat_interleave(": "torch.repeat_interleave",
                       ".cumsum(": "torch.cumsum", ".index_copy": "torch.Tensor.index_copy", ".put_(": "torch.Tensor.put_",
                       "histc(": "torch.histc", "grid_sample(": "torch.nn.functional.grid_sample",
                       "nn.Embedding": "torch.nn.Embedding", "scatter_reduce": "torch.Tensor.scatter_reduce"}
_DETERMINISTIC_WHERE_USED = {
    ("analysis/high_frequency/expectations.py", ".scatter_add_("): "into CPU tensors (torch.zeros without a device)",
    ("analysis/curvature/operator.py", "repeat_interleave("): "class indices, never differentiated",
    ("data/proxy.py", "interpolate("): "bilinear resizing of proxy images, never differentiated",
    ("data/readers.py", "interpolate("): "torchvision resize of ImageNet files on the CPU",
}


def test_the_nondeterministic_list_names_what_torch_lists_and_the_suite_calls_and_nothing_deterministic():
    from pathlib import Path

    doc = torch.use_deterministic_algorithms.__doc__
    made_deterministic, without_kernel = " ".join(doc.split()).split("normally-nondeterministic operations will throw", 1)
    listed = accel.CUDA_NONDETERMINISTIC + accel.CUDA_NO_DETERMINISTIC_KERNEL
    for entry in listed:
        name = entry.split(" ")[0]
        if name.startswith("torch."):
            assert name in doc, f"{name}: not in torch.use_deterministic_algorithms' lists"
    assert all(e.split(" ")[0] in without_kernel for e in accel.CUDA_NO_DETERMINISTIC_KERNEL)
    assert "bicubic" in without_kernel.split("interpolate", 1)[1][:300]
    # the 2-D pools the models use are not on torch's lists (only the 3-D ones are): deterministic, not listed
    assert "torch.nn.MaxPool2d`" not in doc and "torch.nn.AvgPool2d`" not in doc
    assert not any(word in e.lower() for e in listed for word in ("max_pool", "maxpool", "avg_pool", "adaptive"))
    lib = Path(accel.__file__).parent
    missing = []
    for path in lib.rglob("*.py"):
        text, rel = path.read_text(), str(path.relative_to(lib))
        for call, name in _TORCH_LISTED_CALLS.items():
            if call in text and (rel, call) not in _DETERMINISTIC_WHERE_USED and rel != "accel.py":
                if not any(e.startswith(name + " ") for e in listed):
                    missing.append(f"{rel} calls {call} ({name}) but the report's list does not name it")
    assert missing == []
    assert "torch.nn.Conv2d" in made_deterministic and any(e.startswith("torch.nn.Conv2d ") for e in listed)


# -- 4b. torch.compile counters: every worker's, summed into the report's accel lines -------------------------------

def test_the_report_shows_the_runs_compile_counters_summed_over_the_xdist_workers(monkeypatch):
    from types import SimpleNamespace

    from advclaims.plugin import hooks
    from advclaims.verdict import report

    monkeypatch.setattr(accel, "_WORKER_COMPILE", {})
    monkeypatch.setattr(accel, "compile_counters", lambda: {})        # the controller compiles nothing itself
    counts = {"frames_ok": 2, "frames_total": 2, "unique_graphs": 2, "graph_breaks": 0, "compiled_forwards": 1,
              "eager_fallbacks": 0, "recompiles": 1}
    for worker, sent in (("gw0", {**counts, "recompiles": 0}), ("gw0", counts),   # cumulative: the latest replaces
                         ("gw1", {**counts, "eager_fallbacks": 1, "recompiles": 0})):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setattr(hooks.accel_mod, "compile_counters", lambda sent=sent: sent)
        rep = SimpleNamespace(user_properties=[])
        hooks._send_compile_counters(rep)                              # the worker's side
        monkeypatch.delenv("PYTEST_XDIST_WORKER")
        monkeypatch.setattr(hooks.accel_mod, "compile_counters", lambda: {})
        hooks.pytest_runtest_logreport(rep)                            # the controller's side
    d = accel.determinism(accel.Accel(torch.device("cuda"), compile=True), threads=1)
    assert d["compile"] == {"frames_ok": 4, "frames_total": 4, "unique_graphs": 4, "graph_breaks": 0,
                            "compiled_forwards": 2, "eager_fallbacks": 1, "recompiles": 1, "processes": 2}
    assert ("  - torch.compile: 4 frames compiled in 2 process(es), recompiles 1, graph breaks 0, eager fallbacks 1"
            in report._determinism_lines(d))
    monkeypatch.setattr(accel, "_WORKER_COMPILE", {})
    assert "compile" not in accel.determinism(accel.Accel(torch.device("cpu")), threads=1)  # eager: no line


def test_a_real_recompile_is_counted_in_the_determinism_dict(monkeypatch):
    import functools

    monkeypatch.setattr(accel, "_WORKER_COMPILE", {})
    monkeypatch.setattr(accel.torch, "compile", functools.partial(torch.compile, backend="eager"))  # no C compiler
    torch._dynamo.reset()
    before = accel.compile_counters()
    net = accel.CompiledForward(torch.nn.Linear(3, 2))
    net(torch.rand(4, 3))
    net(torch.rand(5, 3))                                              # another batch size: a second graph
    since = accel.compile_since(before)
    assert since["compiled_forwards"] == 1 and since["recompiles"] == 1
    d = accel.determinism(accel.Accel(torch.device("cpu"), compile=True), threads=1)
    assert d["compile"]["recompiles"] >= 1 and d["compile"]["processes"] == 1


# -- 1b. the preflight runs one full-size batch of every attack and analysis it caps ------------------------------

@pytest.mark.parametrize("name", ["smoke", "fast", "paper"])
def test_the_preflight_runs_a_full_batch_of_every_attack_and_analysis_it_caps(name):
    import inspect

    from advclaims import budgets, evaluation
    from advclaims.analysis.curvature import directions, operator

    budget = budgets.get(name)
    pre = budget.for_preflight()
    own_n = budget.test_n or 10**9
    batches = {"attacks": budget.eval_batch, "curvature gradients": budget.curvature.batch,
               "predict": inspect.signature(evaluation.predict).parameters["batch_size"].default,
               "score curves": inspect.signature(directions.score_curves).parameters["batch"].default}
    for what, batch in batches.items():
        assert pre.test_n >= min(own_n, batch), f"{name} preflight: {pre.test_n} images, below one {what} batch"
    deepfool_batch = inspect.signature(operator.deepfool_set).parameters["batch"].default
    assert pre.curvature.svd_images >= min(budget.curvature.svd_images, deepfool_batch)
    assert pre.curvature.confined_images == min(budget.curvature.confined_images, pre.test_n)  # one unbatched call
    assert pre.iteration_cap == budgets.PREFLIGHT_ITERATIONS and pre.seeds == budget.seeds[:1]
    assert pre.test_n <= own_n and pre.curvature.svd_images <= budget.curvature.svd_images

    # and the analyses, called as the curvature claims call them, reach those batch sizes
    net = _Counting()
    x = torch.rand(pre.test_n, 1, 4, 4)
    subspaces.saliency(net, x, batch=pre.curvature.batch)
    assert net.largest == min(pre.curvature.batch, pre.test_n) == min(budget.curvature.batch, own_n)
    net.largest = 0
    operator.deepfool_set(net, torch.rand(pre.curvature.svd_images, 1, 4, 4), max_iter=pre.curvature.iterations(50))
    assert net.largest == min(deepfool_batch, budget.curvature.svd_images)


# -- 5b. PGD adversarial training: no host sync per step, the same CPU model bit for bit ----------------------------

_SYNCS = ("__bool__", "__int__", "__float__", "__index__", "item", "tolist", "cpu", "numpy")


def _host_reads_of_pgd_training(monkeypatch, images: int) -> tuple[int, dict]:
    """How many times a PGD-AT epoch over ``images`` images (batches of 32) read a tensor on the host (each a device
    sync on CUDA), and the trained weights."""
    from advclaims import data as data_mod
    from advclaims import models

    g = torch.Generator().manual_seed(0)
    split = data_mod.Split("synthetic", torch.randint(0, 256, (images, 1, 28, 28), generator=g, dtype=torch.uint8),
                           torch.randint(0, 10, (images,), generator=g))
    recipe = training.Recipe("pgd", epochs=1, batch_size=32, lr=0.05, eps=0.1, alpha=0.05, attack_steps=3,
                             augment=False)
    torch.manual_seed(0)
    net = models.build("lenet", in_channels=1, num_classes=10, width=2, input_size=28, mean=(0.5,), std=(0.5,))
    count = [0]
    for name in _SYNCS:
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, **k):
            count[0] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    training.train(net, split, recipe, seed=0, progress=False)
    monkeypatch.undo()
    return count[0], net.state_dict()


def test_pgd_training_reads_nothing_on_the_host_per_step(monkeypatch):
    two, _ = _host_reads_of_pgd_training(monkeypatch, 64)     # 2 steps of PGD-3
    six, _ = _host_reads_of_pgd_training(monkeypatch, 192)    # 6 steps: the same reads (per training and epoch only)
    assert six == two, f"{(six - two) / 4:.1f} host reads per training step"


def test_pgd_training_still_refuses_non_finite_logits():
    from advclaims import data as data_mod
    from advclaims.attacks import NonFiniteLogits

    class Nan(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(784, 10)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            return out * float("nan") if not self.training else out   # the attack (eval mode) sees NaN logits

    split = data_mod.Split("synthetic", torch.zeros(64, 1, 28, 28, dtype=torch.uint8), torch.zeros(64, dtype=torch.long))
    recipe = training.Recipe("pgd", epochs=1, batch_size=32, lr=0.05, eps=0.1, alpha=0.05, attack_steps=2, augment=False)
    with pytest.raises(NonFiniteLogits, match="NaN/inf logits"):
        training.train(Nan(), split, recipe, seed=0, progress=False)


# -- 7b. the curvature decompositions and the DeepFool SVD in float64 on the model's device ------------------------

class _SymmetricOperator:
    """A fixed symmetric D x D operator in float64 through the interface the decompositions use."""

    def __init__(self, dims: int):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(dims, dims, generator=g, dtype=torch.float64)
        self.a, self.dims, self.points = (a + a.T) / 2, dims, torch.zeros(2, dims, dtype=torch.float64)

    def per_point(self, probes):
        return (probes.double() @ self.a).expand(2, -1, -1)

    def __call__(self, probes):
        return self.per_point(probes)[0]


@pytest.mark.parametrize("method", ["dense", "lanczos"])
def test_the_decompositions_stay_on_the_operators_device_until_their_results(monkeypatch, method):
    """Every random draw is moved to the operator's device and nothing comes to the host before the results (the
    last .cpu() per returned tensor): on a GPU the float64 QRs, SVDs and eigh run there, not on 2 CPU threads."""
    from advclaims.analysis.curvature import decomposition

    op, drawn, to_host = _SymmetricOperator(40), [], [0]
    real_randn, real_cpu = decomposition._randn, torch.Tensor.cpu
    monkeypatch.setattr(decomposition, "_randn", lambda g, *s, device: drawn.append(device) or real_randn(g, *s,
                                                                                                         device=device))
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: to_host.__setitem__(0, to_host[0] + 1) or
                        real_cpu(self, *a, **k))
    g = torch.Generator().manual_seed(0)
    out = decomposition._dense(op, g) if method == "dense" else decomposition._block_lanczos(op, g, k=4)
    monkeypatch.undo()
    assert drawn and all(d == op.points.device for d in drawn)
    tensors = [t for t in out if isinstance(t, torch.Tensor)]
    assert to_host[0] == len(tensors) and all(t.device.type == "cpu" for t in tensors)


def test_the_deepfool_svd_is_reduced_when_that_gives_every_direction_and_identical_on_the_cpu(monkeypatch):
    calls = []
    real = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda a, full_matrices=True: calls.append(full_matrices) or
                        real(a, full_matrices=full_matrices))
    for n, d in ((300, 100), (60, 100)):
        p = torch.randn(n, 1, 10, d // 10, generator=torch.Generator().manual_seed(n))
        svd = subspaces.deepfool_svd(p)
        r = p.flatten(1).double()
        r = r / r.norm(dim=1, keepdim=True)
        _, s, vt = real(r, full_matrices=True)                         # what it computed before
        assert torch.equal(svd.vectors, vt.T.float().contiguous()) and tuple(svd.vectors.shape) == (d, d)
        assert torch.equal(svd.singular_values[:len(s)], s.float())
    assert calls == [False, True]    # N >= D: the reduced SVD (no N x N left factor); N < D: the full one


# -- 6. the nightly workflow: CUDA or fail; steps that block the ones after them; per-GPU training queues -------------

def _workflow_steps() -> list[dict]:
    """The nightly job's steps as {name, if, shell, run} (a small reader of this one file's layout: no YAML library)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / ".github" / "workflows" / "nightly-gpu.yml").read_text()
    steps = []
    for block in re.split(r"\n      - ", text.split("\n    steps:\n", 1)[1])[1:]:
        lines = block.splitlines()
        step = {"name": lines[0].split("name:", 1)[-1].strip() if "name:" in lines[0] else lines[0].strip()}
        for i, line in enumerate(lines):
            key = line.strip().split(":", 1)[0]
            if key in ("if", "shell") and line.startswith("        ") and not line.startswith("         "):
                step[key] = line.split(":", 1)[1].strip()
            if line.strip().startswith("run:"):
                first = line.split("run:", 1)[1].strip()
                step["run"] = first if first != "|" else "\n".join(l[10:] for l in lines[i + 1:]
                                                                   if l.startswith("          ") or not l.strip())
        steps.append(step)
    return steps


def test_the_nightly_fails_unless_torch_sees_cuda_and_each_step_blocks_the_ones_after_it(tmp_path):
    import subprocess
    import sys

    steps = _workflow_steps()
    names = [s["name"] for s in steps]
    order = [next(i for i, n in enumerate(names) if n.startswith(p)) for p in
             ("Set up", "Fail unless torch sees CUDA", "Preflight", "Train every model", "Claims at the paper budget")]
    assert order == sorted(order)
    for s in steps[order[1]:order[-1] + 1]:                        # the GPU steps: bash -e, skipped after a failure
        assert s.get("shell") == "bash" and "if" not in s and "continue-on-error" not in s["run"], s["name"]
        assert subprocess.run(["bash", "-n"], input=s["run"].replace("${{", "{").replace("}}", "}"),
                              text=True).returncode == 0, s["name"]
    upload = next(s for s in steps if s["name"].startswith("Upload"))
    assert upload.get("if") == "always()"
    check = steps[order[1]]["run"]
    snippet = next(line for line in check.splitlines() if "cuda.is_available()" in line)
    code = snippet.split('-c "', 1)[1].rsplit('"', 1)[0]
    rc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode
    assert (rc == 0) == torch.cuda.is_available()                  # here, with no CUDA: the step fails
    assert 'GPUS=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")' in check
    for s in (steps[order[2]], steps[order[4]]):                   # pytest never falls back to the CPU
        assert "--repro-device cuda" in s["run"]


def test_the_nightly_trains_each_model_once_on_its_gpus_own_queue_and_a_failure_stops_no_other(tmp_path):
    import subprocess

    train = next(s for s in _workflow_steps() if s["name"].startswith("Train every model"))["run"]
    bin_ = tmp_path / ".venv" / "bin"
    bin_.mkdir(parents=True)
    listing = "\n".join(["# a comment", "advclaims train --role adv --dataset cifar10 --arch wrn28_10 --seed 0",
                         *[f"advclaims train --role std --dataset cifar10 --arch resnet18 --seed {i}" for i in range(5)]])
    (bin_ / "advclaims").write_text(f"""#!/bin/bash
if [ "$1" = models ]; then printf '%s\\n' "{listing}"; exit 0; fi
echo "start $* " >> trained.txt
case "$*" in *"--seed 0 "*) sleep 1.5;; esac
echo "end $* " >> trained.txt
case "$*" in *"--seed 3 "*) exit 3;; esac
""")
    (bin_ / "torchrun").write_text('#!/bin/bash\necho "torchrun $*" >> trained.txt\nexit 1\n')  # WRN fails too
    for f in bin_.iterdir():
        f.chmod(0o755)
    script = train.replace("${{ github.event.inputs.markers || 'cifar10' }}", "cifar10")
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "GPUS": "2", "STATE": str(tmp_path / "state")})
    assert run.returncode == 1, run.stderr                         # WRN and seed 3 failed: the step fails, at the end
    lines = (tmp_path / "trained.txt").read_text().splitlines()
    assert sum("wrn28_10" in line and line.startswith("torchrun") and "--nproc_per_node 2" in line for line in lines) == 1
    for i in range(5):                                            # every other model trained once, on GPU i % 2
        mine = [line for line in lines if f"--seed {i} " in line and "resnet18" in line and line.startswith("start")]
        assert len(mine) == 1 and f"--device cuda:{i % 2} " in mine[0], mine
    at = {(word, i): n for n, line in enumerate(lines) for word in ("start", "end") for i in range(5)
          if line.startswith(word) and f"--seed {i} " in line}
    assert at[("start", 3)] < at[("end", 0)]   # GPU 1 went on through its queue while GPU 0 trained a long model


# -- 8. scripts/gpu_check.sh: one device command of at most 10 minutes, every issue-24 item a gpu_items subcommand ---

def test_gpu_check_fits_one_ten_minute_device_call_and_names_only_existing_items():
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "gpu_check.sh").read_text()
    assert subprocess.run(["bash", "-n", str(root / "scripts" / "gpu_check.sh")]).returncode == 0
    gpu = dict(re.findall(r"\b(LIMIT|TRAIN_LIMIT)=(\d+)", script.split("else\n", 1)[1].split("fi\n", 1)[0]))
    precisions = len(re.search(r'PRECISIONS="([^"]*)"\nfi', script).group(1).split())
    total = 0
    for seconds in re.findall(r'^\s*step \S+ (\$\(\(.*?\)\)|\S+) ', script, flags=re.M):
        value = seconds.replace('"', "").replace("$TRAIN_LIMIT", gpu["TRAIN_LIMIT"]).replace("$LIMIT", gpu["LIMIT"])
        value = value.replace("TRAIN_LIMIT", gpu["TRAIN_LIMIT"]).replace("LIMIT", gpu["LIMIT"])
        value = eval(value.replace("$((", "(").replace("))", ")"))      # e.g. $(( LIMIT - 30 ))
        total += value * (precisions if "TRAIN_LIMIT" in seconds else 1)
    assert total <= 588, f"{total} s of step limits: more than one 10-minute device call"
    items = (root / "scripts" / "gpu_items.py").read_text()
    named = set(re.findall(r"gpu_items\.py (\w+)", script))
    assert {"env", "resume", "deepfool", "saliency", "deterministic", "linalg", "ddp"} <= named
    assert all(f'"{name}": ' in items for name in named)
    assert "--nproc_per_node 2 scripts/gpu_items.py ddp" in script
