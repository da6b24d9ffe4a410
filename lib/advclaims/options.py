"""The --repro-* options, their validation (one line per mistake), the markers and the session header."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from . import accel as accel_mod
from . import budgets as budgets_mod
from . import iterations as iterations_mod
from . import data as data_mod
from . import expected as expected_mod
from . import external as external_mod
from . import report as report_mod

CATALOGUE = pytest.StashKey[dict]()


DATASET_MARKERS = tuple(data_mod.DATASETS)


def pytest_addoption(parser):
    g = parser.getgroup("advclaims", "advclaims: claims about adversarial examples as statistical tests")
    g.addoption("--repro-budget", choices=budgets_mod.NAMES, default=os.environ.get("ADVCLAIMS_BUDGET", "smoke"),
                help="smoke (CPU minutes), fast (GPU minutes), paper (the papers' settings). Default: smoke")
    g.addoption("--repro-data-root", default=None, metavar="DIR",
                help="datasets in torchvision's layout (default: $ADVCLAIMS_DATA or ~/.cache/advclaims/data)")
    g.addoption("--repro-download", action="store_true", help="let torchvision download missing datasets")
    g.addoption("--repro-cache", default=None, metavar="DIR",
                help="checkpoint store (default: $ADVCLAIMS_CACHE, else $XDG_CACHE_HOME/advclaims/store, "
                     "else ~/.cache/advclaims/store)")
    g.addoption("--repro-device", default="auto", metavar="DEV",
                help="cpu, cuda, cuda:N or auto (default); with -n, plain cuda/auto gives xdist worker N GPU N")
    g.addoption("--repro-precision", choices=("auto", "fp32", "bf16"), default="auto",
                help="training and first-order attacks: auto (default) is bf16 autocast on CUDA, fp32 on the CPU")
    g.addoption("--repro-compile", choices=("auto", "on", "off"), default="auto",
                help="torch.compile of the training forward: auto (default) is on for CUDA, off on the CPU")
    g.addoption("--repro-deterministic", action="store_true",
                help="CUDA: deterministic kernels only, no cuDNN autotuning (slower; the CPU is always repeatable)")
    g.addoption("--repro-expected", default=None, metavar="DIR", help="expected/ folder (default: <rootdir>/expected)")
    g.addoption("--repro-report", default=None, metavar="DIR", help="write report.json, report.md and figures to DIR")
    g.addoption("--repro-autosave", action="store_true", help="keep this run as a numbered JSON in --repro-storage")
    g.addoption("--repro-storage", default=None, metavar="DIR", help="saved runs (default: <rootdir>/.repro-runs)")
    g.addoption("--repro-compare", nargs="?", const="latest", default=None, metavar="RUN",
                help="print what changed since a saved run (number, path of a report.json, or latest)")
    g.addoption("--repro-compare-fail", action="store_true", help="fail the session when a verdict flipped")
    g.addoption("--repro-seeds", type=int, default=None, metavar="N",
                help="training seeds per model role (seeds 0..N-1); statistics pool over them (docs/statistics.md). "
                     "Default: the budget's (smoke 1, fast 3, paper 5)")
    g.addoption("--repro-model", action="append", default=[], metavar="ROLE[@DATASET]=SPEC",
                help="run the claims on this model instead of training one: SPEC is ARCH:PATH (a state dict or "
                     "checkpoint of a registry architecture; ARCH:PATH:raw for unnormalised pixels), module:callable "
                     "(an nn.Module on [0, 1] pixels) or the name given to `advclaims import`; ROLE is one of "
                     + ", ".join(external_mod.ROLES) + "; a relative PATH is from the directory pytest runs in; "
                     "repeatable")
    g.addoption("--repro-stages", action="append", default=[], metavar="ROLE[@DATASET]=STAGE:MODULE,...",
                help="where the --repro-model of ROLE (a layout of your own) keeps the stages the claims read, e.g. "
                     "adv=conv1:body.0,layer1:body.3 (stages: conv1, layer0 ... layer4); repeatable")
    g.addoption("--repro-published", action="append", default=[], metavar="ROLE[@DATASET]=CLEAN[,ROBUST]",
                help="the published clean (and robust) accuracy of the --repro-model of ROLE, fractions from 0 to 1, "
                     "e.g. adv=0.849,0.519: the health gate's reference probe holds the model against it instead of "
                     "the suite's own model of that role (which it would train if it is not stored); repeatable")
    g.addoption("--repro-quiet", action="store_true", help="no progress bars while training")
    g.addoption("--repro-preflight", action="store_true",
                help="run the selected instances in the budget's shapes with the least schedule and samples that "
                     "let every step run; reports ran/error, wall time and peak memory per instance, no verdicts")
    g.addoption("--repro-threads", type=int, default=None, metavar="N",
                help="CPU threads per process (default: cores / xdist workers; oversubscribed OpenMP threads "
                     "slow small convolutions down by orders of magnitude)")


def device_of(config) -> torch.device:
    try:
        dev = accel_mod.parse_device(config.getoption("--repro-device"), torch.cuda.device_count())
    except ValueError as err:
        raise pytest.UsageError(f"--repro-device {err}") from None
    dev = pin_worker(dev, getattr(config, "workerinput", {}).get("workerid"))
    if dev.type == "cuda" and dev.index is not None:
        # the worker's current device: kernels, caching allocator and the preflight's memory statistics are
        # this GPU's, not cuda:0's (a replacement worker after a crash lands here too)
        torch.cuda.set_device(dev)
    return dev


def pin_worker(dev: torch.device, worker: str | None) -> torch.device:
    """xdist worker gwN gets GPU N mod the GPU count when the device is plain "cuda", so that
    ``-n <gpus>`` runs one worker per GPU; an explicit cuda:N, the CPU and the controller stay put."""
    if dev.type != "cuda" or dev.index is not None or not worker or not worker.startswith("gw"):
        return dev
    count = torch.cuda.device_count()
    return torch.device("cuda", int(worker[2:]) % count) if count > 0 else dev


def storage_of(config) -> Path:
    return Path(config.getoption("--repro-storage") or config.rootpath / ".repro-runs")


VALIDATED_OPTIONS = ("--repro-budget", "--repro-device", "--repro-threads", "--repro-seeds", "--repro-model",
                     "--repro-stages", "--repro-published", "--repro-compare", "--repro-compare-fail",
                     "--repro-data-root", "--repro-cache", "--repro-report", "--repro-storage")


MAX_SEEDS = 100


_DIRECTORY_OPTIONS = ("--repro-data-root", "--repro-cache", "--repro-report", "--repro-storage")


@dataclass(frozen=True)
class ReproOptions:
    """The validated options that pytest_configure acts on."""

    budget: str
    device: torch.device
    threads: int | None       # torch threads per process; None leaves torch's default


def _is_file(value) -> bool:
    """Whether ``value`` names an existing file; False for strings no file can have (NUL, too long,
    ~user of an unknown user)."""
    try:
        return Path(value).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):  # pathlib raises RuntimeError for an unknown ~user
        return False


def _expands(value) -> bool:
    """Whether a leading ~ or ~user in ``value`` can be expanded (pathlib raises otherwise)."""
    try:
        Path(value).expanduser()
        return True
    except RuntimeError:
        return False


def _threads(value, workers: int, cpu_count: int) -> int | None:
    """--repro-threads, or cores / xdist workers when unset under xdist."""
    if value is None:
        return max(1, cpu_count // workers) if workers > 1 else None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= cpu_count:
        raise pytest.UsageError(f"--repro-threads {value!r}: pass a whole number from 1 to {cpu_count} "
                                f"(this machine's CPU cores)")
    return value


def _compare(value, fail: bool, storage: Path) -> None:
    """--repro-compare is latest, a saved run's number or a report.json; a named run must exist now,
    not be found missing after the whole session. 'latest' with no saved run yet is reported at the end."""
    if fail and value is None:
        raise pytest.UsageError("--repro-compare-fail needs --repro-compare [RUN] (the run to compare with)")
    if value is None or value == "latest":
        return
    if not isinstance(value, str) or not (value.isdecimal() or _is_file(value)):
        raise pytest.UsageError(f"--repro-compare {value!r}: pass latest, a saved run's number (e.g. 0003) "
                                f"or the path of a report.json")
    try:
        report_mod.find_run(storage, value)
    except FileNotFoundError as err:
        raise pytest.UsageError(f"--repro-compare {value}: {err}") from None


def _slot(option: str, value, example: str) -> tuple[str, str]:
    """ROLE[@DATASET]=REST of --repro-model / --repro-stages, checked: (slot, rest); a mistake is one usage error."""
    if not isinstance(value, str) or "=" not in value:
        raise pytest.UsageError(f"{option} {value!r}: use ROLE[@DATASET]={example}")
    slot, rest = value.split("=", 1)
    role, _, dataset = slot.partition("@")
    if role not in external_mod.ROLES:
        raise pytest.UsageError(f"{option} {value!r}: unknown role {role!r}; roles: {', '.join(external_mod.ROLES)}")
    if dataset and dataset not in data_mod.DATASETS:
        raise pytest.UsageError(f"{option} {value!r}: unknown dataset {dataset!r}; known: "
                                f"{', '.join(sorted(data_mod.DATASETS))}")
    return slot, rest


def stage_maps(values: list[str]) -> dict[str, dict[str, str]]:
    """--repro-stages ROLE[@DATASET]=STAGE:MODULE,... values as {slot: {stage: module path}}."""
    out = {}
    for value in values or []:
        slot, text = _slot("--repro-stages", value, "conv1:body.0,layer1:body.3")
        if slot in out:
            raise pytest.UsageError(f"--repro-stages: {slot} is given twice")
        try:
            out[slot] = external_mod.parse_stages(text)
        except external_mod.ModelRefused as err:
            raise pytest.UsageError(f"--repro-stages {value!r}: {err}") from None
    return out


def published_accuracies(values: list[str]) -> dict[str, dict[str, float]]:
    """--repro-published ROLE[@DATASET]=CLEAN[,ROBUST] values as {slot: {"clean": c, "robust": r}}."""
    out = {}
    for value in values or []:
        slot, text = _slot("--repro-published", value, "CLEAN[,ROBUST], e.g. adv=0.849,0.519")
        parts = text.split(",")
        numbers = []
        for part in parts:
            try:
                numbers.append(float(part))
            except ValueError:
                numbers.append(float("nan"))
        if not 1 <= len(parts) <= 2 or not all(0 <= x <= 1 for x in numbers):
            raise pytest.UsageError(f"--repro-published {value!r}: give CLEAN[,ROBUST], accuracies as fractions from "
                                    f"0 to 1, e.g. {slot}=0.849,0.519")
        if slot in out:
            raise pytest.UsageError(f"--repro-published: {slot} is given twice")
        out[slot] = dict(zip(("clean", "robust"), numbers))
    return out


def _covered(option: str, slots, models: dict[str, str]) -> None:
    """A stage map or published accuracy is for a --repro-model: a slot no --repro-model fills is one usage error
    (an imported model brings its own stored stage map and published accuracies; these override them)."""
    for slot in slots:
        role, _, dataset = slot.partition("@")
        if not any(r == role and (not d or not dataset or d == dataset)
                   for r, _, d in (m.partition("@") for m in models)):
            raise pytest.UsageError(
                f"{option} {slot}=...: no --repro-model gives role {role}{f' on {dataset}' if dataset else ''}, so it "
                f"would be ignored; it describes a model of yours: pass --repro-model {slot}=SPEC (or NAME, an "
                f"imported model, whose stored stage map and published accuracies need no {option})")


def external_models(values: list[str], base: str | Path | None = None) -> dict[str, str]:
    """--repro-model ROLE[@DATASET]=SPEC values as {role or role@dataset: spec}, a relative ARCH:PATH resolved
    against ``base`` (the invocation directory); a mistake, or an entry point whose module is not importable,
    is one usage error."""
    out = {}
    for value in values:
        if not isinstance(value, str) or "=" not in value:
            raise pytest.UsageError(f"--repro-model {value!r}: use ROLE[@DATASET]=SPEC, e.g. adv=resnet18:model.pt")
        slot, spec = value.split("=", 1)
        role, _, dataset = slot.partition("@")
        if role not in external_mod.ROLES:
            raise pytest.UsageError(f"--repro-model {value!r}: unknown role {role!r}; roles: "
                                    f"{', '.join(external_mod.ROLES)}")
        if dataset and dataset not in data_mod.DATASETS:
            raise pytest.UsageError(f"--repro-model {value!r}: unknown dataset {dataset!r}; known: "
                                    f"{', '.join(sorted(data_mod.DATASETS))}")
        if ":" in spec:
            try:
                source = external_mod.parse_spec(spec, base)
                if source.kind == "entry_point":
                    source.sha256()  # imports its module: not importable is a refusal now, not a traceback later
            except external_mod.ModelRefused as err:
                raise pytest.UsageError(f"--repro-model {value!r}: {err}") from None
            spec = source.text
        elif not spec:
            raise pytest.UsageError(f"--repro-model {value!r}: give a spec after '='")
        if slot in out:
            raise pytest.UsageError(f"--repro-model: {slot} is given twice")
        out[slot] = spec
    return out


def validate_options(options: dict, *, storage: Path, cuda_count: int, workers: int, cpu_count: int,
                     base: str | Path | None = None) -> ReproOptions:
    """Check the --repro-* values (keys as in VALIDATED_OPTIONS); raises pytest.UsageError, one line."""
    budget = options.get("--repro-budget")
    if budget not in budgets_mod.NAMES:
        raise pytest.UsageError(f"--repro-budget {budget!r} (or $ADVCLAIMS_BUDGET) is not a budget: "
                                f"use {', '.join(budgets_mod.NAMES)}")
    try:
        device = accel_mod.parse_device(options.get("--repro-device", "auto"), cuda_count)
    except ValueError as err:
        raise pytest.UsageError(f"--repro-device {err}") from None
    for name in _DIRECTORY_OPTIONS:
        value = options.get(name)
        if value is not None and (not isinstance(value, (str, Path)) or "\0" in str(value) or _is_file(value)
                                  or not _expands(value)):
            raise pytest.UsageError(f"{name} {value!r} is not a directory path (it is a file, an unknown ~user, "
                                    f"or no path at all): pass a directory")
    seeds = options.get("--repro-seeds")
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS):
        raise pytest.UsageError(f"--repro-seeds {seeds!r}: pass a whole number of training seeds from 1 to {MAX_SEEDS}")
    models = external_models(options.get("--repro-model") or [], base)
    _covered("--repro-stages", stage_maps(options.get("--repro-stages") or []), models)
    _covered("--repro-published", published_accuracies(options.get("--repro-published") or []), models)
    _compare(options.get("--repro-compare"), bool(options.get("--repro-compare-fail")), storage)
    return ReproOptions(budget, device, _threads(options.get("--repro-threads"), workers, cpu_count))


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): the claim of docs/claims.md this test checks (an id in expected/)")
    for name in DATASET_MARKERS:
        config.addinivalue_line("markers", f"{name}: runs on {name}")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: minutes even at the smoke budget")
    folder = Path(config.getoption("--repro-expected") or config.rootpath / "expected")
    try:
        config.stash[CATALOGUE] = expected_mod.load(folder)
    except expected_mod.ExpectedError as err:
        raise pytest.UsageError(f"expected/ is malformed: {err}") from None
    for name in sorted(set(expected_mod.PAPERS) | set(expected_mod.paper_keys(config.stash[CATALOGUE]))):
        config.addinivalue_line("markers", f"{name}: a claim of the {name} paper")
    # validate early: a bad option is one usage error now, not 600 failed tests or a lost report later
    options = validate_options({name: config.getoption(name) for name in VALIDATED_OPTIONS},
                               storage=storage_of(config), cuda_count=torch.cuda.device_count(),
                               workers=int(getattr(config, "workerinput", {}).get("workercount", 1)),
                               cpu_count=os.cpu_count() or 1, base=config.invocation_params.dir)
    if options.threads is not None:
        torch.set_num_threads(options.threads)


_MARK_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


_MARK_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")  # pytest's identifier syntax in -m expressions


def marker_names(expression: str) -> set[str]:
    """The marker names an -m expression mentions: its identifiers, less and/or/not and the keyword
    arguments of ``marker(key=value)``."""
    text = _MARK_QUOTED.sub(" ", expression)
    names = set()
    for match in _MARK_IDENT.finditer(text):
        keyword = text[match.end():].lstrip().startswith("=") or text[:match.start()].rstrip().endswith("=")
        if match.group() not in ("and", "or", "not") and not keyword:
            names.add(match.group())
    return names


def check_marker_expression(expression: str | None, known: set[str]) -> None:
    """pytest.UsageError naming an unknown marker of ``expression``, its nearest known one and them all."""
    unknown = sorted(marker_names(expression or "") - known)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise pytest.UsageError(f"-m {expression!r}: unknown marker {unknown[0]!r}{hint}; known markers: "
                            f"{', '.join(sorted(known))}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Check -m once, on the controller, when every plugin and initial conftest has registered its markers."""
    config = session.config
    if not hasattr(config, "workerinput"):
        known = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
        check_marker_expression(config.option.markexpr, known)


def pytest_report_header(config):
    budget = budgets_mod.get(config.getoption("--repro-budget"))
    if config.getoption("--repro-preflight"):
        budget = budget.for_preflight()
    lines = budget.describe().splitlines()
    if budget.preflight:
        lines.append(f"  preflight: every iteration count above (PGD steps, attacks, Lanczos) capped at "
                     f"{iterations_mod.PREFLIGHT_ITERATIONS} (advclaims.iterations); no verdicts")
    return lines


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    catalogue = config.stash[CATALOGUE]
    has_cuda = torch.cuda.is_available()
    for item in items:
        marker = item.get_closest_marker("claim")
        if marker is not None:
            if len(marker.args) != 1 or not isinstance(marker.args[0], str):
                raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.claim(\"ID\") with one claim id")
            cid = marker.args[0]
            if cid not in catalogue:
                raise pytest.UsageError(
                    f"{item.nodeid}: unknown claim id {cid!r}; known ids come from expected/*.toml "
                    f"({', '.join(sorted(catalogue)) or 'none'})")
            # `-k LP-8` selects the claim: pytest matches -k against names and these extra keywords
            # (substrings, case-insensitive, as everywhere in -k: `-k LP-1` also selects LP-10..LP-14).
            item.extra_keyword_matches.add(cid)
            paper = catalogue[cid].paper
            if not item.get_closest_marker(paper):
                item.add_marker(getattr(pytest.mark, paper))
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none is available here"))


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    """The session's pipeline gets --repro-published (the reference probe's published accuracies) here: the
    ``pipeline`` fixture (advclaims.session) builds it from the other --repro-* options."""
    result = yield
    if fixturedef.argname == "pipeline" and hasattr(result, "published") and not result.published:
        result.published = published_accuracies(request.config.getoption("--repro-published"))
    return result


def accel_of(config, device: torch.device) -> accel_mod.Accel:
    return accel_mod.resolve(device, config.getoption("--repro-precision"),
                             {"on": True, "off": False}.get(config.getoption("--repro-compile"), "auto"),
                             deterministic=config.getoption("--repro-deterministic"))


def worker_threads(config) -> int:
    """Torch threads each test process ran with (the controller of -n N reports its workers')."""
    if config.getoption("--repro-threads"):
        return config.getoption("--repro-threads")
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return torch.get_num_threads()


def seeds_of(config) -> tuple[int, ...]:
    """The training seeds of this session: --repro-seeds N (seeds 0..N-1), else the budget's default."""
    n = config.getoption("--repro-seeds")
    seeds = tuple(range(n)) if n is not None else budgets_mod.get(config.getoption("--repro-budget")).seeds
    return seeds[:1] if config.getoption("--repro-preflight") else seeds  # a preflight runs one seed
