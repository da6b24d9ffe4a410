"""Bad input is explained in one line naming the input and the fix, never a traceback from deep in torch.

Covers the bad-input list a user can meet: unknown dataset, budget, model, role and marker; eps < 0 or NaN;
pixels outside [0, 1]; NaN or inf pixels; wrong shapes, channel counts and sizes (for every public
attack, in one table); a NaN checkpoint; a data root holding the wrong files (library, pytest plugin,
CLI); and hypothesis fuzzing of the pytest options and the ``advclaims`` command line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import re
import textwrap

import pytest
import torch
from _pytest.config.argparsing import Parser
from hypothesis import example, given, settings
from hypothesis import strategies as st

from advclaims import budgets, cli, data, models

from advclaims.verdict import expected

from advclaims.verdict import records
from advclaims.plugin import collection as collection_mod
from advclaims.plugin import options as options_mod
from advclaims.attacks import (NonFiniteLogits, bim, confined_deepfool, cw_l2, deepfool, fgsm, nrf, pgd,
                               targeted_deepfool, universal_perturbation)
from advclaims.evaluation import attack_batched
from advclaims.verdict.measurement import Measurement
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.verdict.stats import Estimate
from advclaims.checkpoints.store import Store


SIDE, CLASSES = 16, 3
ONE_CLAIM = """
[claims.LP-7]
title = "t"
source = "s"
[[claims.LP-7.checks]]
statistic = "diff"
description = "d"
comparator = ">"
threshold = 0.0
basis = "protocol"
basis_note = "a test"
"""  # one claim, parsed directly (the pytester tests take claim_project's, which is the same)


def lenet() -> torch.nn.Module:
    """A tiny LeNet for 1x16x16 images: its linear head makes the image size matter."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return models.build("lenet", in_channels=1, num_classes=CLASSES, width=2, input_size=SIDE).eval()


def one_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


# ---------------------------------------------------------------------------------------------
# unknown names from the library


def _pipeline(tmp_path) -> Pipeline:
    return Pipeline(budget="smoke", store=Store(tmp_path / "store"), data_root=tmp_path / "data", device="cpu")


@pytest.mark.parametrize("call, words", [
    pytest.param(lambda tmp: budgets.get("quick"), ["'quick'", "smoke, fast, paper"], id="budgets.get"),
    pytest.param(lambda tmp: budgets.get(None), ["None", "smoke, fast, paper"], id="budgets.get-None"),
    pytest.param(lambda tmp: data.info("cifar"), ["'cifar'", "cifar10", "fashion_mnist"], id="data.info"),
    pytest.param(lambda tmp: models.build("resnet19", in_channels=3, num_classes=10), ["'resnet19'", "resnet18"],
                 id="models.build"),
    pytest.param(lambda tmp: models.build("lenet", in_channels=1, num_classes=10, width=0), ["width >= 1", "0"],
                 id="models.build-width"),
    pytest.param(lambda tmp: models.build("lenet", in_channels=1, num_classes=10, input_size=8),
                 ["16x16", "input_size=8"], id="models.build-lenet-too-small"),
    pytest.param(lambda tmp: budgets.get("smoke").width("resnet19"), ["'resnet19'", "resnet18"], id="Budget.width"),
    pytest.param(lambda tmp: _pipeline(tmp).model("robust", "fashion_mnist"), ["'robust'", "std or adv"],
                 id="Pipeline.model-role"),
    pytest.param(lambda tmp: _pipeline(tmp).model("std", "cifar"), ["'cifar'", "cifar10"], id="Pipeline.model-dataset"),
    pytest.param(lambda tmp: _pipeline(tmp).model("std", "mnist", arch="resnet19"), ["'resnet19'", "resnet18"],
                 id="Pipeline.model-arch"),
    pytest.param(lambda tmp: Pipeline(budget="quick"), ["'quick'", "smoke"], id="Pipeline-budget"),
])
def test_unknown_names_are_one_line_naming_the_known_ones(tmp_path, call, words):
    with pytest.raises(ValueError) as error:
        call(tmp_path)
    message = one_line(error.value)
    assert all(w in message for w in words), message


# ---------------------------------------------------------------------------------------------
# every public attack against every bad input, in one table


def _nrf(model, x, y, **kw):
    mask = torch.ones(len(x), 5)  # LeNet width 2: 5 feature channels, all in the set
    return nrf(model, x, y, mask=mask, encode=model.features, tail=model.head, steps=1, **kw)


ATTACKS = {  # name -> (call taking eps, whether the attack has an eps budget)
    "fgsm": (lambda m, x, y, eps: fgsm(m, x, y, eps=eps), True),
    "pgd": (lambda m, x, y, eps: pgd(m, x, y, eps=eps, alpha=0.01, steps=1), True),
    "bim": (lambda m, x, y, eps: bim(m, x, y, eps=eps, alpha=0.01, steps=1), True),
    "cw_l2": (lambda m, x, y, eps: cw_l2(m, x, y, steps=1), False),
    "deepfool": (lambda m, x, y, eps: deepfool(m, x, y=y, max_iter=1), False),
    "universal_perturbation": (lambda m, x, y, eps: universal_perturbation(m, x, eps=eps, max_passes=1,
                                                                            deepfool_steps=1), True),
    "confined_deepfool": (lambda m, x, y, eps: confined_deepfool(m, x, None, max_iter=1), False),
    "targeted_deepfool": (lambda m, x, y, eps: targeted_deepfool(m, x, 0, max_iter=1), False),
    "nrf": (lambda m, x, y, eps: _nrf(m, x, y, eps=eps), True),
}
GOOD_EPS = 0.1


def _pixels(value: float):
    def make(x):
        x = x.clone()
        x[0, 0, 3, 5] = value
        return x
    return make


CASES = {  # name -> (eps, transform of a good batch, words the message must hold; None: eps case only)
    "eps_negative": (-0.1, None, ["eps", "-0.1", "radius"]),
    "eps_nan": (math.nan, None, ["eps", "nan", "radius"]),
    "eps_inf": (math.inf, None, ["eps", "inf", "radius"]),
    "pixels_above_one": (GOOD_EPS, lambda x: x * 255, ["outside [0, 1]", "scaled to [0, 1]"]),
    "pixels_below_zero": (GOOD_EPS, lambda x: x - 0.5, ["outside [0, 1]", "normalisation inside the model"]),
    "nan_pixels": (GOOD_EPS, _pixels(math.nan), ["NaN", "inf"]),
    "inf_pixels": (GOOD_EPS, _pixels(math.inf), ["NaN", "inf"]),
    "no_batch_dimension": (GOOD_EPS, lambda x: x[0], ["4-D float", "(N, C, H, W)"]),
    "three_channels_for_one": (GOOD_EPS, lambda x: x.expand(-1, 3, -1, -1).contiguous(),
                               ["(N, 1, H, W)", ", 3, 16, 16)", "in_channels=3"]),
    "wrong_image_size": (GOOD_EPS, lambda x: torch.rand(2, 1, 28, 28), ["H = W = 16", ", 1, 28, 28)", "resize"]),
}


def _table():
    for attack, (_, has_eps) in ATTACKS.items():
        for case, (eps, transform, _) in CASES.items():
            if transform is None and not has_eps:
                continue
            yield pytest.param(attack, case, id=f"{attack}-{case}")


@pytest.mark.parametrize("attack, case", list(_table()))
def test_every_attack_explains_every_bad_input_in_one_line(attack, case):
    call = ATTACKS[attack][0]
    eps, transform, words = CASES[case]
    x = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    x = transform(x) if transform is not None else x
    try:
        call(lenet(), x, torch.tensor([0, 1]), eps)
    except ValueError as err:  # ours (NonFiniteLogits is one too), never torch's RuntimeError
        message = one_line(err)
        assert all(w in message for w in words), message
    else:
        pytest.fail(f"{attack} accepted {case}")


def test_a_good_batch_passes_every_attack():
    """The table's failures come from the bad input, not from a broken call."""
    x = torch.rand(2, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    for name, (call, bounded) in ATTACKS.items():
        out = call(lenet(), x, torch.tensor([0, 1]), GOOD_EPS)
        if name == "universal_perturbation":  # one pattern for every image, within the budget
            assert out.shape[-3:] == x.shape[1:] and out.abs().max() <= GOOD_EPS + 1e-6
            continue
        adv = out if torch.is_tensor(out) else getattr(out, "x_adv", None)
        adv = adv if adv is not None else x + out.perturbation  # the DeepFool family returns its perturbation
        assert adv.shape == x.shape and torch.isfinite(adv).all(), name
        if bounded:
            assert (adv - x).abs().max() <= GOOD_EPS + 1e-6, name


# ---------------------------------------------------------------------------------------------
# the model's own input check (its Normalize layer)


@pytest.mark.parametrize("name, c, size, x, words", [
    ("resnet18", 3, 32, torch.rand(2, 1, 32, 32), ["(N, 3, H, W)", "got (2, 1, 32, 32)", "in_channels=1"]),
    ("vgg16_bn", 1, 28, torch.rand(1, 28, 28, 1), ["(N, 1, H, W)", "in_channels=28"]),
    ("lenet", 1, 28, torch.rand(2, 1, 32, 32), ["H = W = 28", "got (2, 1, 32, 32)", "resize the images to 28x28"]),
    ("nin", 3, 32, torch.rand(3, 32, 32), ["(N, 3, H, W)", "x.unsqueeze(0)"]),
    ("wrn28_10", 3, 32, torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), ["uint8", "x.float() / 255"]),
    ("preact_resnet18", 3, 32, [[0.5]], ["got a list", "torch.as_tensor"]),
])
def test_a_model_refuses_the_wrong_images_at_its_input(name, c, size, x, words):
    model = models.build(name, in_channels=c, num_classes=10, width=1, input_size=size).eval()
    with pytest.raises(ValueError) as error:
        model(x)
    message = one_line(error.value)
    assert all(w in message for w in words), message


def test_models_with_adaptive_pooling_take_any_image_size():
    """Where the size does not matter, it is not checked: ResNet-18 built for 32x32 runs on 28x28."""
    model = models.build("resnet18", in_channels=1, num_classes=10, width=1, input_size=32).eval()
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_normalize_refuses_a_zero_std():
    with pytest.raises(ValueError, match=r"std > 0.*per-channel statistics"):
        models.Normalize((0.5,), (0.0,))


# ---------------------------------------------------------------------------------------------
# a checkpoint whose weights are NaN


def _nan_lenet() -> torch.nn.Module:
    model = lenet()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    return model


def test_a_nan_checkpoint_stops_the_attack_with_a_message_to_retrain():
    x = torch.rand(4, 1, SIDE, SIDE)
    with pytest.raises(NonFiniteLogits) as error:
        attack_batched(pgd, _nan_lenet(), x, torch.zeros(4, dtype=torch.long), batch_size=2,
                       eps=0.1, alpha=0.02, steps=2)
    assert "retrain" in one_line(error.value)


def test_a_non_finite_statistic_names_the_claim_and_the_likely_cause():
    spec = expected.parse(ONE_CLAIM, paper="local_properties")["LP-7"]
    measurement = Measurement(statistics={"diff": Estimate(math.nan, math.nan, math.nan, 10)}, n=10)
    with pytest.raises(ValueError) as error:
        records.measured(records.Instance(spec, "fashion_mnist", "smoke", (0,)), measurement)
    message = one_line(error.value)
    assert "LP-7" in message and "diff" in message and "diverged training" in message


# ---------------------------------------------------------------------------------------------
# a data root that exists but holds the wrong files


def _wrong_files(root):
    """cifar10 whose test batch is not a pickle; tiny_imagenet without its validation annotations."""
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle at all")
    (root / "tiny-imagenet-200" / "train" / "n01").mkdir(parents=True)
    return root


def test_advclaims_datasets_lists_wrong_files_as_corrupt_in_one_line(tmp_path, capsys):
    assert cli.main(["datasets", "--data-root", str(_wrong_files(tmp_path / "data"))]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "corrupt" in lines["cifar10"] and "not a CIFAR pickle" in lines["cifar10"]
    assert "corrupt" in lines["tiny_imagenet"] and "val_annotations.txt is missing" in lines["tiny_imagenet"]
    assert "missing" in lines["svhn"] and "To provide it" in lines["svhn"]


def test_advclaims_train_on_wrong_files_exits_2_with_one_line(tmp_path, capsys):
    root = _wrong_files(tmp_path / "data")
    code = cli.main(["train", "--role", "std", "--dataset", "cifar10", "--data-root", str(root),
                     "--cache", str(tmp_path / "store"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "not a CIFAR pickle" in err


def test_image_folder_with_an_undecodable_file_is_corrupt(tmp_path):
    folder = tmp_path / "imagenet" / "val" / "n01"
    folder.mkdir(parents=True)
    (folder / "broken.jpeg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(data.DatasetCorrupt, match=r"broken\.jpeg cannot be decoded as an image.*replace or remove"):
        data.read_arrays("imagenet", "test", tmp_path, limit=1)
    (folder / "broken.jpeg").unlink()
    with pytest.raises(data.DatasetCorrupt, match="holds no class folders with .jpeg/.png images"):
        data.read_arrays("imagenet", "test", tmp_path, limit=1)


CLAIM_ON_CIFAR = textwrap.dedent('''
    import pytest
    from advclaims.plugin import on_datasets

    @pytest.mark.claim("LP-7")
    @on_datasets("cifar10", "svhn")
    def test_uses_the_data(dataset, check):
        raise AssertionError("never reached: the dataset fixture stops first")
''')


def test_a_claim_on_wrong_files_errors_in_one_line_and_on_absent_files_skips(claim_project, tmp_path):
    pytester = claim_project(strict=False)
    pytester.makepyfile(test_claims=CLAIM_ON_CIFAR)
    result = pytester.runpytest("-p", "advclaims.plugin", "-p", "fixtures.data", "-rs", "--repro-device=cpu",
                                f"--repro-data-root={_wrong_files(tmp_path / 'data')}",
                                f"--repro-cache={tmp_path / 'store'}")  # "=": a bare path would move the rootdir
    result.assert_outcomes(errors=1, skipped=1)  # the dataset fixture fails: an error in setup
    result.stdout.fnmatch_lines(["*test_batch is not a CIFAR pickle*Fix or remove those files*",
                                 "SKIPPED*dataset 'svhn' not found*To provide it*"])
    assert "Traceback" not in result.stdout.str()


# ---------------------------------------------------------------------------------------------
# pytest options: pure validation, fuzzed; then the real option parser


def validate(options: dict, tmp_path, *, cuda_count=0, workers=1, cpu_count=4) -> options_mod.ReproOptions:
    return options_mod.validate_options({"--repro-budget": "smoke", **options}, storage=tmp_path / "runs",
                                   cuda_count=cuda_count, workers=workers, cpu_count=cpu_count)


def test_good_options_give_a_config(tmp_path):
    assert validate({}, tmp_path) == options_mod.ReproOptions("smoke", torch.device("cpu"), None)
    assert validate({"--repro-device": "auto"}, tmp_path, cuda_count=2, workers=2).device == torch.device("cuda")
    assert validate({"--repro-threads": 3}, tmp_path).threads == 3
    assert validate({}, tmp_path, workers=2, cpu_count=8).threads == 4  # cores / xdist workers


@pytest.mark.parametrize("options, words", [
    ({"--repro-budget": "quick"}, ["--repro-budget 'quick'", "ADVCLAIMS_BUDGET", "smoke, fast, paper"]),
    ({"--repro-device": "tpu"}, ["--repro-device 'tpu'", "cpu, cuda, cuda:N or auto"]),
    ({"--repro-device": "meta"}, ["--repro-device 'meta'", "cpu, cuda, cuda:N or auto"]),
    ({"--repro-device": "cuda"}, ["CUDA is not available", "use cpu or auto"]),
    ({"--repro-device": "cuda:7"}, ["1 CUDA device", "cuda:0 to cuda:0"]),
    ({"--repro-threads": 0}, ["--repro-threads 0", "1 to 4"]),
    ({"--repro-threads": 2**40}, ["--repro-threads", "1 to 4"]),
    ({"--repro-compare": "yesterday"}, ["--repro-compare 'yesterday'", "latest", "report.json"]),
    ({"--repro-compare": "0007"}, ["--repro-compare 0007", "no saved run", "--repro-autosave"]),
    ({"--repro-compare-fail": True}, ["--repro-compare-fail needs --repro-compare"]),
    ({"--repro-cache": "__FILE__"}, ["--repro-cache", "not a directory", "pass a directory"]),
    ({"--repro-report": "__FILE__"}, ["--repro-report", "not a directory"]),
    ({"--repro-data-root": "a\0b"}, ["--repro-data-root", "not a directory"]),
])
def test_bad_options_are_one_usage_error_naming_option_and_fix(tmp_path, options, words):
    (tmp_path / "file").write_text("x")
    options = {k: str(tmp_path / "file") if v == "__FILE__" else v for k, v in options.items()}
    cuda_count = 1 if options.get("--repro-device") == "cuda:7" else 0
    with pytest.raises(pytest.UsageError) as error:
        validate(options, tmp_path, cuda_count=cuda_count)
    message = one_line(error.value)
    assert all(w in message for w in words), message


values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=30),
                   st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:1", "latest", "smoke", "paper", "0001",
                                    "", "/", "/dev/null"]))
option_dicts = st.dictionaries(st.sampled_from(options_mod.VALIDATED_OPTIONS), values)


@given(options=option_dicts, cuda_count=st.integers(0, 2), workers=st.integers(1, 8))
@settings(deadline=None, max_examples=300)
def test_fuzzed_options_give_a_config_or_one_usage_error(tmp_path_factory, options, cuda_count, workers):
    tmp_path = tmp_path_factory.getbasetemp()
    try:
        result = options_mod.validate_options(options, storage=tmp_path / "no-runs", cuda_count=cuda_count,
                                         workers=workers, cpu_count=4)
    except pytest.UsageError as err:
        one_line(err)
    else:
        assert result.budget in budgets.NAMES and result.device.type in ("cpu", "cuda")
        assert result.threads is None or 1 <= result.threads <= 4


def _parse_pytest_options(argv: list[str]) -> argparse.Namespace:
    parser = Parser(_ispytest=True)
    options_mod.pytest_addoption(parser)
    return parser.parse(argv)


OPTION_FLAGS = ["--repro-budget", "--repro-device", "--repro-threads", "--repro-compare", "--repro-cache",
                "--repro-report", "--repro-storage", "--repro-data-root", "--repro-expected"]


@given(st.lists(st.tuples(st.sampled_from(OPTION_FLAGS), st.one_of(st.text(max_size=12), st.integers().map(str))),
                max_size=4))
@example(pairs=[("--repro-compare", "~0")])  # found by this test: pathlib raised RuntimeError (unknown ~user)
@example(pairs=[("--repro-cache", "~no-such-user-advclaims/store")])
@settings(deadline=None, max_examples=200)
def test_fuzzed_pytest_argv_parses_or_is_a_usage_error(tmp_path_factory, pairs):
    """The real option definitions: argparse's choices/int errors are pytest usage errors (one line),
    and whatever parses then validates to a config or one usage error."""
    argv = [f"{flag}={value}" for flag, value in pairs]
    try:
        ns = _parse_pytest_options(argv)
    except pytest.UsageError as err:  # argparse's: the usage block, then one line naming the argument
        assert re.match(r"\S+: error: argument --repro-", str(err).splitlines()[-1]), err
        return
    try:
        options_mod.validate_options({name: getattr(ns, name.lstrip("-").replace("-", "_"))
                                 for name in options_mod.VALIDATED_OPTIONS},
                                storage=tmp_path_factory.getbasetemp() / "no-runs", cuda_count=0, workers=1,
                                cpu_count=4)
    except pytest.UsageError as err:
        one_line(err)


def test_the_budget_from_the_environment_is_validated_too(claim_project, monkeypatch):
    monkeypatch.setenv("ADVCLAIMS_BUDGET", "quick")
    pytester = claim_project(strict=False)
    result = pytester.runpytest("-p", "advclaims.plugin")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--repro-budget 'quick' (or $ADVCLAIMS_BUDGET) is not a budget*"])


# ---------------------------------------------------------------------------------------------
# -m with an unknown marker


@pytest.mark.parametrize("expression, names", [
    ("cifar10", {"cifar10"}),
    ("cifar10 and not (slow or gpu)", {"cifar10", "slow", "gpu"}),
    ("claim(id='LP-7') or unit", {"claim", "unit"}),
    ('claim(id="a and b", n=3)', {"claim"}),
    ("", set()),
])
def test_marker_names_are_the_identifiers_of_the_expression(expression, names):
    assert collection_mod.marker_names(expression) == names


def test_an_unknown_marker_suggests_the_nearest_and_lists_the_known():
    with pytest.raises(pytest.UsageError) as error:
        collection_mod.check_marker_expression("cifar and not slow", {"cifar10", "cifar100", "slow", "unit"})
    message = one_line(error.value)
    assert "unknown marker 'cifar'" in message and "did you mean cifar10" in message and "unit" in message
    collection_mod.check_marker_expression("cifar10 and not slow", {"cifar10", "slow"})  # known: no error


@given(st.text(max_size=40))
@settings(deadline=None, max_examples=200)
def test_any_marker_expression_is_known_or_one_usage_error(expression):
    try:
        collection_mod.check_marker_expression(expression, {"cifar10", "slow"})
    except pytest.UsageError as err:
        one_line(err)


@pytest.mark.parametrize("strict", [True, False], ids=["strict-markers", "lenient"])
def test_a_misspelt_dataset_marker_is_a_usage_error_not_an_empty_run(claim_project, strict):
    pytester = claim_project(strict=False)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    flags = ["--strict-markers"] if strict else []
    result = pytester.runpytest("-p", "advclaims.plugin", *flags, "-m", "cifar")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown marker 'cifar' (did you mean cifar10?)*known markers*fashion_mnist*"])


# ---------------------------------------------------------------------------------------------
# the advclaims command line


def _cli_parse(argv: list[str]) -> tuple[int | None, str]:
    """(exit code or None when argv parsed, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as exit_:
            return exit_.code, err.getvalue()
    return None, err.getvalue()


@pytest.mark.parametrize("argv, words", [
    (["train", "--role", "std", "--dataset", "nope"], ["--dataset", "invalid choice: 'nope'", "fashion_mnist"]),
    (["train", "--role", "std", "--dataset", "mnist", "--budget", "quick"], ["--budget", "'quick'", "smoke"]),
    (["train", "--role", "robust", "--dataset", "mnist"], ["--role", "'robust'", "std"]),
    (["train", "--role", "std", "--dataset", "mnist", "--arch", "resnet19"], ["--arch", "'resnet19'", "resnet18"]),
    (["train", "--role", "std", "--dataset", "mnist", "--device", "tpu"], ["--device", "'tpu'", "cpu, cuda"]),
    (["train", "--role", "std", "--dataset", "mnist", "--seed", "-1"], ["--seed", "'-1'", "0 to 2147483647"]),
    (["train", "--role", "std", "--dataset", "mnist", "--weight-decay", "nan"], ["--weight-decay", "finite", ">= 0"]),
    (["datasets", "--data-root", "/dev/null/x\0"], ["--data-root", "not a directory"]),
    (["compare", "only-one.json"], ["the following arguments are required: new"]),
    (["fly"], ["invalid choice: 'fly'", "train"]),
])
def test_bad_command_lines_exit_2_with_the_argument_and_the_fix(argv, words):
    code, err = _cli_parse(argv)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("advclaims") and all(w in last for w in words), err


CLI_WORDS = ["train", "datasets", "compare", "--role", "std", "adv", "--dataset", "mnist", "cifar10", "--budget",
             "smoke", "--arch", "lenet", "--weight-decay", "--seed", "--cache", "--data-root", "--device", "cpu",
             "cuda:3", "--fail-on-flip", "--download", "-3", "1e400", "nan"]


@given(st.lists(st.one_of(st.sampled_from(CLI_WORDS), st.text(max_size=10)), max_size=8))
@settings(deadline=None, max_examples=300)
def test_fuzzed_command_lines_parse_or_exit_2_with_one_error_line(argv):
    code, err = _cli_parse(argv)
    if code is not None and code != 0:  # 0: a --help (or an abbreviation of it) among the words
        # the error line may echo the user's text (even a newline), so look for its start, not the last line
        assert code == 2 and re.search(r"^advclaims[\w ]*: error: ", err, re.MULTILINE), err
