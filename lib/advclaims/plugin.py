"""The pytest plugin: --repro-* options, the claim marker, the ``check`` fixture, the report.

A claim test wires fixtures to one analysis and hands the Measurement to ``check``, which turns
it into a verdict against expected/, records it for the report, and decides the test's outcome:
passed (verdict as expected), known finding (the non-reproduction expected/ records: a strict
xfail), or failed (any other verdict: the message says what to record if the change is real).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from . import accel as accel_mod
from . import budgets as budgets_mod
from . import data as data_mod
from . import expected as expected_mod
from . import external as external_mod
from . import report as report_mod
from . import seeds as seeds_mod
from .attacks._common import NonFiniteLogits
from .health import ModelUnhealthy
from .measurement import Measurement
from .pipeline import Pipeline
from .stats import Unmeasurable, Verdict, combine, verdict
from .store import Store
from .training import TrainingDiverged

pytest_plugins = ["advclaims.preflight"]

RECORDS = pytest.StashKey[list]()
CATALOGUE = pytest.StashKey[dict]()
CHECKED = pytest.StashKey[bool]()
MEASUREMENTS = pytest.StashKey[list]()
STARTED = pytest.StashKey[float]()
COMPARISON = pytest.StashKey[list]()
PROPERTY = "advclaims-record"
DATASET_MARKERS = tuple(data_mod.DATASETS)


def pytest_addoption(parser):
    g = parser.getgroup("advclaims", "advclaims: claims about adversarial examples as statistical tests")
    g.addoption("--repro-budget", choices=budgets_mod.NAMES, default=os.environ.get("ADVCLAIMS_BUDGET", "smoke"),
                help="smoke (CPU minutes), fast (GPU minutes), paper (the papers' settings). Default: smoke")
    g.addoption("--repro-data-root", default=None, metavar="DIR",
                help="datasets in torchvision's layout (default: $ADVCLAIMS_DATA or ~/.cache/advclaims/data)")
    g.addoption("--repro-download", action="store_true", help="let torchvision download missing datasets")
    g.addoption("--repro-cache", default=None, metavar="DIR",
                help="checkpoint store (default: $ADVCLAIMS_CACHE or ~/.cache/advclaims/store)")
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
                help="training seeds per model role (seeds 0..N-1); statistics pool over them by a hierarchical "
                     "bootstrap. Default: the budget's (smoke 2, fast 3, paper 5)")
    g.addoption("--repro-model", action="append", default=[], metavar="ROLE[@DATASET]=SPEC",
                help="run the claims on this model instead of training one: SPEC is ARCH:PATH (a state dict or "
                     "checkpoint of a registry architecture; ARCH:PATH:raw for unnormalised pixels), module:callable "
                     "(an nn.Module on [0, 1] pixels) or the name given to `advclaims import`; ROLE is one of "
                     + ", ".join(external_mod.ROLES) + "; repeatable")
    g.addoption("--repro-quiet", action="store_true", help="no progress bars while training")
    g.addoption("--repro-preflight", action="store_true",
                help="run the selected instances in the budget's shapes with the least schedule and samples that "
                     "let every step run; reports ran/error, wall time and peak memory per instance, no verdicts")
    g.addoption("--repro-threads", type=int, default=None, metavar="N",
                help="CPU threads per process (default: cores / xdist workers; oversubscribed OpenMP threads "
                     "slow small convolutions down by orders of magnitude)")


def _device(config) -> torch.device:
    try:
        dev = accel_mod.parse_device(config.getoption("--repro-device"), torch.cuda.device_count())
    except ValueError as err:
        raise pytest.UsageError(f"--repro-device {err}") from None
    return pin_worker(dev, getattr(config, "workerinput", {}).get("workerid"))


def pin_worker(dev: torch.device, worker: str | None) -> torch.device:
    """xdist worker gwN gets GPU N mod the GPU count when the device is plain "cuda", so that
    ``-n <gpus>`` runs one worker per GPU; an explicit cuda:N, the CPU and the controller stay put."""
    if dev.type != "cuda" or dev.index is not None or not worker or not worker.startswith("gw"):
        return dev
    count = torch.cuda.device_count()
    return torch.device("cuda", int(worker[2:]) % count) if count > 0 else dev


def _storage(config) -> Path:
    return Path(config.getoption("--repro-storage") or config.rootpath / ".repro-runs")


# ---------------------------------------------------------------------------------------------
# option validation: pure functions (no pytest run needed to test them); each error is one line
# naming the option, the value and the fix

VALIDATED_OPTIONS = ("--repro-budget", "--repro-device", "--repro-threads", "--repro-seeds", "--repro-model", "--repro-compare", "--repro-compare-fail",
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


def external_models(values: list[str]) -> dict[str, str]:
    """--repro-model ROLE[@DATASET]=SPEC values as {role or role@dataset: spec}; a mistake is one usage error."""
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
                external_mod.parse_spec(spec)
            except external_mod.ModelRefused as err:
                raise pytest.UsageError(f"--repro-model {value!r}: {err}") from None
        elif not spec:
            raise pytest.UsageError(f"--repro-model {value!r}: give a spec after '='")
        if slot in out:
            raise pytest.UsageError(f"--repro-model: {slot} is given twice")
        out[slot] = spec
    return out


def validate_options(options: dict, *, storage: Path, cuda_count: int, workers: int, cpu_count: int) -> ReproOptions:
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
    external_models(options.get("--repro-model") or [])
    _compare(options.get("--repro-compare"), bool(options.get("--repro-compare-fail")), storage)
    return ReproOptions(budget, device, _threads(options.get("--repro-threads"), workers, cpu_count))


def pytest_configure(config):
    config.addinivalue_line("markers", "claim(id): the claim of claims.md this test checks (an id in expected/)")
    for name in DATASET_MARKERS:
        config.addinivalue_line("markers", f"{name}: runs on {name}")
    for name in expected_mod.PAPERS:
        config.addinivalue_line("markers", f"{name}: a claim of the {name} paper")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: minutes even at the smoke budget")
    config.stash[RECORDS] = []
    folder = Path(config.getoption("--repro-expected") or config.rootpath / "expected")
    try:
        config.stash[CATALOGUE] = expected_mod.load(folder)
    except expected_mod.ExpectedError as err:
        raise pytest.UsageError(f"expected/ is malformed: {err}") from None
    # validate early: a bad option is one usage error now, not 600 failed tests or a lost report later
    options = validate_options({name: config.getoption(name) for name in VALIDATED_OPTIONS},
                               storage=_storage(config), cuda_count=torch.cuda.device_count(),
                               workers=int(getattr(config, "workerinput", {}).get("workercount", 1)),
                               cpu_count=os.cpu_count() or 1)
    if options.threads is not None:
        torch.set_num_threads(options.threads)


# ---------------------------------------------------------------------------------------------
# -m expressions: a misspelt marker (`-m cifar`) would select nothing, silently

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
    return budgets_mod.get(config.getoption("--repro-budget")).describe().splitlines()


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
            paper = catalogue[cid].paper
            if not item.get_closest_marker(paper):
                item.add_marker(getattr(pytest.mark, paper))
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device; none is available here"))


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def repro_budget(pipeline) -> budgets_mod.Budget:
    return pipeline.budget


@pytest.fixture(scope="session")
def pipeline(request) -> Pipeline:
    cfg = request.config
    preflight = cfg.getoption("--repro-preflight")
    store = Store(cfg.getoption("--repro-cache"))
    pipe = Pipeline(
        budget=cfg.getoption("--repro-budget"),
        store=Store(store.root / "preflight") if preflight else store,
        enforce_health=not preflight,
        preflight=preflight,
        external_models=external_models(cfg.getoption("--repro-model")),
        data_root=cfg.getoption("--repro-data-root"),
        device=_device(cfg),
        download=cfg.getoption("--repro-download"),
        progress=not cfg.getoption("--repro-quiet") and sys.stderr.isatty(),
        accel=_accel(cfg, _device(cfg)),
    )
    pipe.budget = dataclasses.replace(pipe.budget, seeds=_seeds(cfg))
    _PIPELINES.append(pipe)
    return pipe


def _accel(config, device: torch.device) -> accel_mod.Accel:
    return accel_mod.resolve(device, config.getoption("--repro-precision"),
                             {"on": True, "off": False}.get(config.getoption("--repro-compile"), "auto"),
                             deterministic=config.getoption("--repro-deterministic"))


def _worker_threads(config) -> int:
    """Torch threads each test process ran with (the controller of -n N reports its workers')."""
    if config.getoption("--repro-threads"):
        return config.getoption("--repro-threads")
    workers = getattr(config.option, "numprocesses", None)
    if isinstance(workers, int) and workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return torch.get_num_threads()


def on_datasets(*names: str):
    """Parametrise a claim over datasets, one marker per dataset (``-m cifar10`` selects its instances)."""
    for n in names:
        data_mod.info(n)
    return pytest.mark.parametrize(
        "dataset", [pytest.param(n, marks=getattr(pytest.mark, n), id=n) for n in names], indirect=True)


_PIPELINES: list[Pipeline] = []  # the session's pipeline, once a test has asked for it
USED_FROM = pytest.StashKey[int]()


def pytest_runtest_setup(item):
    item.stash[STARTED] = time.perf_counter()
    item.stash[USED_FROM] = len(_PIPELINES[0].used) if _PIPELINES else 0


def _models_used(item) -> list[dict]:
    """The models the instance was handed (trained or external), one summary per model."""
    if not _PIPELINES:
        return []
    seen = {}
    for model in _PIPELINES[0].used[item.stash.get(USED_FROM, 0):]:
        seen.setdefault(model.key, model.summary())
    return list(seen.values())


def _instance(item) -> tuple[expected_mod.ClaimSpec, str, str, tuple[str, ...]]:
    """The claim spec, dataset, variant id and other parameters of a claim test item."""
    marker = item.get_closest_marker("claim")
    if marker is None:
        raise pytest.UsageError(f"{item.nodeid} uses `check` but has no @pytest.mark.claim(\"ID\")")
    spec: expected_mod.ClaimSpec = item.config.stash[CATALOGUE][marker.args[0]]
    callspec = getattr(item, "callspec", None)
    dataset = callspec.params.get("dataset") if callspec else None
    if dataset is None:
        raise pytest.UsageError(f"{item.nodeid}: a claim test must be parametrised over datasets (on_datasets)")
    variant = callspec.id  # every parameter of the instance, e.g. "cifar10" or "cifar10-vgg16"
    others = tuple(str(v) for k, v in sorted(callspec.params.items()) if k != "dataset")
    others += tuple(p for p in variant.split("-") if p != dataset and p not in others)
    return spec, dataset, variant, others


def _proxy(config, dataset: str) -> dict | None:
    """The proxy marker of ``dataset`` under the session's data root (advclaims.proxy), or None."""
    root = config.getoption("--repro-data-root")
    try:
        return data_mod.proxy_marker(dataset, Path(root).expanduser() if root else data_mod.default_root())
    except data_mod.DatasetCorrupt:
        return None


def _outcome(item, record: dict, expectation: expected_mod.Expectation) -> str:
    """passed, known finding, failed, or "proxy data" (no expected verdict is held against a proxy)."""
    if record.get("proxy"):
        return "proxy data"
    outside = [v for v in record["values"] if record["paper_setting"] and v["within"] is False]
    if record["verdict"] == expectation.verdict.value and not outside:
        return "passed" if expectation.verdict is Verdict.REPRODUCED else "known finding"
    return "failed"


def _failure_lines(spec, record: dict, variant: str, dataset: str, budget: str) -> list[str]:
    lines = [f"{spec.id} on {variant} at the {budget} budget: verdict {record['verdict']}, "
             f"expected/{spec.paper}.toml expects {record['expected']}."]
    if record.get("unmeasurable"):
        lines.append(f"  not measurable: {record['unmeasurable']}")
    lines += [f"  {c['statistic']} = {report_mod._interval(c)}, claimed {c['comparator']} {c['threshold']}: "
              f"{c['verdict']}" for c in record["checks"] if c.get("value") is not None]
    lines += [f"  paper value {v['statistic']}: measured {v['measured']:.4g}, paper {v['paper']} ± {v['tolerance']}"
              for v in record["values"] if record["paper_setting"] and v["within"] is False]
    lines.append(f"If this is a real change, record it under [claims.{spec.id}.expect.\"{dataset}.{budget}\"] "
                 f"with its reason.")
    return lines


def _record(item, measurement: Measurement | None, unmeasurable: str | None = None, *,
            seeds: tuple[int, ...] | None = None) -> tuple[dict, list[str]]:
    """The report record of a claim instance (from its Measurement, or from the reason it could not be
    measured) and its outcome; the record travels to the controller in the item's user properties."""
    spec, dataset, variant, others = _instance(item)
    budget = item.config.getoption("--repro-budget")
    seeds = seeds if seeds is not None else _seeds(item.config)
    if measurement is not None:
        record = _evaluate(spec, measurement, dataset, budget, seeds, others)
    else:
        record = _unmeasured(spec, unmeasurable, dataset, budget, seeds, others)
    proxy = _proxy(item.config, dataset)
    models = _models_used(item)
    record.update({"variant": variant, "nodeid": item.nodeid, "proxy": proxy, "models": models,
                   "variance": seeds_mod.coverage(seeds, external=any(m["source"].get("kind") != "trained"
                                                                      for m in models)),
                   "wall_seconds": time.perf_counter() - item.stash.get(STARTED, time.perf_counter())})
    record["outcome"] = _outcome(item, record, spec.expectation(dataset, budget, others))
    return record, _failure_lines(spec, record, variant, dataset, budget)


def _publish(item, report, record: dict) -> None:
    prop = (PROPERTY, json.dumps(record, default=str))
    item.user_properties.append(prop)
    if report is not None and prop not in report.user_properties:
        report.user_properties.append(prop)


@pytest.fixture
def check(request, pipeline):
    """Hand a claim's Measurement over: one per training seed is collected (``pytest_pyfunc_call`` runs the
    test once per seed), then pooled into the verdict, recorded, and the test passes / xfails / fails."""
    _instance(request.node)  # a misused check is a usage error before any work

    def _check(measurement: Measurement) -> None:
        if not isinstance(measurement, Measurement):
            raise TypeError(f"check takes the Measurement an analysis returns, got {type(measurement).__name__}")
        request.node.stash[CHECKED] = True
        request.node.stash.setdefault(MEASUREMENTS, []).append(measurement)

    return _check


@pytest.fixture
def repro_seed(pipeline) -> int:
    """The training seed a fixture builds for: the budget's first; ``run_per_seed`` supplies the others."""
    return pipeline.budget.seeds[0]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A claim test runs once per training seed; its Measurements pool into one verdict."""
    item = pyfuncitem
    if item.get_closest_marker("claim") is None or "check" not in item.fixturenames:
        return None
    seeds = _seeds(item.config)
    item.stash[MEASUREMENTS] = []
    for k, seed in enumerate(seeds):
        kwargs = ({a: item.funcargs[a] for a in item._fixtureinfo.argnames} if k == 0
                  else seeds_mod.arguments_for_seed(item, seed))
        item.obj(**kwargs)
        if len(item.stash[MEASUREMENTS]) != k + 1:
            pytest.fail(f"{item.nodeid}: a claim test must hand its measurement to `check` once per run; it handed "
                        f"{len(item.stash[MEASUREMENTS]) - k} for seed {seed}", pytrace=False)
        if k == 0 and not seeds_mod.seed_dependent(item):
            break  # nothing in this test depends on the seed: one run is all there is
    measured = item.stash[MEASUREMENTS]
    _finish(item, seeds_mod.pool(measured, seeds[:len(measured)]), seeds[:len(measured)])
    return True


def _finish(item, measurement: Measurement, seeds: tuple[int, ...]) -> None:
    if item.config.getoption("--repro-preflight"):
        _record(item, measurement, seeds=seeds)  # every step up to the verdict runs; the verdict is not shown
        return
    record, failure = _record(item, measurement, seeds=seeds)
    _draw(record, measurement, item.config.getoption("--repro-report"))
    _publish(item, None, record)
    if record["outcome"] == "known finding":
        pytest.xfail(f"known finding ({record['claim']} {record['verdict']} on {record['dataset']}/"
                     f"{record['budget']}): {record['expected_reason']}")
    if record["outcome"] == "failed":
        pytest.fail("\n".join(failure), pytrace=False)


def _seeds(config) -> tuple[int, ...]:
    """The training seeds of this session: --repro-seeds N (seeds 0..N-1), else the budget's default."""
    n = config.getoption("--repro-seeds")
    seeds = tuple(range(n)) if n is not None else budgets_mod.get(config.getoption("--repro-budget")).seeds
    return seeds[:1] if config.getoption("--repro-preflight") else seeds  # a preflight runs one seed


def _unmeasured(spec: expected_mod.ClaimSpec, reason: str, dataset: str, budget: str, seeds,
                variants: tuple[str, ...]) -> dict:
    """The record of an instance whose data do not allow its statistics: inconclusive, with the reason."""
    expectation = spec.expectation(dataset, budget, variants)
    checks = [{"statistic": c.statistic, "description": c.description, "comparator": c.comparator,
               "threshold": c.threshold, "paper": c.paper, "tolerance": c.tolerance, "value": None, "low": None,
               "high": None, "n": 0, "verdict": Verdict.INCONCLUSIVE.value} for c in spec.checks]
    return {
        "claim": spec.id, "paper": spec.paper, "title": spec.title, "source": spec.source,
        "dataset": dataset, "budget": budget, "seeds": list(seeds), "n": 0, "verdict": Verdict.INCONCLUSIVE.value,
        "expected": expectation.verdict.value, "expected_reason": expectation.reason, "checks": checks,
        "values": [], "paper_setting": spec.in_paper_setting(dataset, budget), "tables": {}, "tests": [],
        "notes": [f"not measurable: {reason}"], "unmeasurable": reason, "protocol_note": spec.protocol_note,
        "figures": [], "figure_errors": [],
    }


def evaluate(claim_id: str, measurement: Measurement, *, dataset: str = "fashion_mnist", budget: str = "smoke",
             expected_dir: str | Path | None = None) -> dict:
    """The record a claim instance would get from ``measurement`` (its "verdict" above all), outside a pytest
    run: for tests that feed an analysis a case where the claim is false and show the verdict changes."""
    spec = expected_mod.load(expected_dir)[claim_id]
    return _evaluate(spec, measurement, dataset, budget, (0,))


UNINFORMATIVE = "uninformative"  # a check whose statistic cannot vary (saturated): shown, never deciding


def _check_record(c: expected_mod.CheckSpec, est, spec_id: str) -> dict:
    if not math.isfinite(est.value):
        raise ValueError(f"{spec_id}: statistic {c.statistic} is not finite ({est}); the model or data upstream "
                         f"is broken (diverged training?)")
    record = {"statistic": c.statistic, "description": c.description, "comparator": c.comparator,
              "threshold": c.threshold, "paper": c.paper, "tolerance": c.tolerance, "basis": c.basis,
              "basis_note": c.basis_note, **est.as_dict()}
    if est.uninformative:
        record.update(verdict=UNINFORMATIVE, uninformative=est.uninformative)
        return record
    record["verdict"] = verdict(est, c.comparator, c.threshold).value
    if c.threshold_range is not None:  # our threshold: the verdict at either end of the range we would defend
        record["threshold_range"] = list(c.threshold_range)
        record["verdict_across_threshold"] = {f"{t:g}": verdict(est, c.comparator, t).value for t in c.threshold_range}
    return record


def _combined(checks: list[dict]) -> str:
    deciding = [Verdict(c["verdict"]) for c in checks if c["verdict"] != UNINFORMATIVE]
    return combine(deciding).value if deciding else Verdict.INCONCLUSIVE.value


def _sensitivity(spec: expected_mod.ClaimSpec, m: Measurement, checks: list[dict]) -> tuple[list[dict], list[str]]:
    """The verdict at every value of each declared protocol parameter, and what the verdict depends on."""
    rows, depends = [], []
    for p in spec.parameters:
        grid = m.sensitivity.get(p.name, {})
        verdicts = set()
        for value in p.values:
            label = f"{value:g}"
            if value == p.default:
                at = checks
            else:
                if label not in grid:
                    raise KeyError(f"{spec.id}: expected/{spec.paper}.toml declares parameter {p.name} = {label}, but "
                                   f"the analysis measured it at {sorted(grid)}")
                at = [_check_record(c, grid[label][c.statistic], spec.id) for c in spec.checks
                      if c.statistic in grid[label]]
            v = _combined(at)
            verdicts.add(v)
            rows.append({"parameter": p.name, "value": value, "default": value == p.default, "verdict": v,
                         "checks": {c["statistic"]: {k: c[k] for k in ("value", "low", "high", "verdict")} for c in at}})
        if len(verdicts) > 1:
            depends.append(p.name)
    for c in checks:
        if len(set(c.get("verdict_across_threshold", {}).values()) | {c["verdict"]}) > 1:
            depends.append(f"the threshold of {c['statistic']} (ours: {c['threshold_range'][0]:g} to "
                           f"{c['threshold_range'][1]:g})")
    return rows, depends


def _evaluate(spec: expected_mod.ClaimSpec, m: Measurement, dataset: str, budget: str, seeds,
              variants: tuple[str, ...] = ()) -> dict:
    checks = []
    for c in spec.checks:
        if c.statistic not in m.statistics:
            raise KeyError(f"{spec.id}: the analysis measured {sorted(m.statistics)} but expected/{spec.paper}.toml "
                           f"checks {c.statistic!r}")
        checks.append(_check_record(c, m.statistics[c.statistic], spec.id))
    in_setting = spec.in_paper_setting(dataset, budget)
    values = []
    for v in spec.values:
        measured = m.values.get(v.statistic)
        within = None if measured is None else abs(measured - v.paper) <= v.tolerance
        values.append({"statistic": v.statistic, "description": v.description, "paper": v.paper,
                       "tolerance": v.tolerance, "measured": measured, "within": within})
    expectation = spec.expectation(dataset, budget, variants)
    sensitivity, depends = _sensitivity(spec, m, checks)
    return {
        "claim": spec.id, "paper": spec.paper, "title": spec.title, "source": spec.source,
        "dataset": dataset, "budget": budget, "seeds": list(seeds), "n": m.n,
        "verdict": _combined(checks), "depends_on": depends, "sensitivity": sensitivity,
        "expected": expectation.verdict.value, "expected_reason": expectation.reason,
        "checks": checks, "values": values, "paper_setting": in_setting, "tables": m.tables,
        "tests": [{"name": k, **vars(t)} for k, t in m.tests.items()], "notes": m.notes,
        "protocol_note": spec.protocol_note, "figures": [], "figure_errors": [],
    }


def _draw(record: dict, m: Measurement, report_dir: str | None) -> None:
    if not report_dir:
        return
    for name, draw in m.figures.items():
        rel = Path("figures") / f"{record['claim']}_{record.get('variant', record['dataset'])}_{name}.png"
        try:
            draw(Path(report_dir) / rel)
            record["figures"].append(str(rel))
        except Exception as err:  # a broken figure must not lose the measured verdict
            record["figure_errors"].append(f"{rel}: {type(err).__name__}: {err}")
            warnings.warn(f"figure {rel} could not be drawn: {err}")


# errors whose message already says what happened and what to do: shown as one line, no traceback
_USER_ERRORS = (NonFiniteLogits, TrainingDiverged, ModelUnhealthy, external_mod.ModelRefused, data_mod.DatasetCorrupt,
                data_mod.DatasetMissing)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if (report.failed and call.excinfo is not None and call.excinfo.errisinstance(Unmeasurable)
            and item.get_closest_marker("claim") is not None and call.when in ("setup", "call")):
        _unmeasurable_report(item, report, str(call.excinfo.value))
    elif report.failed and call.excinfo is not None and call.excinfo.errisinstance(_USER_ERRORS):
        err = call.excinfo.value
        report.longrepr = f"{item.nodeid}: {type(err).__name__}: {err}"
    return report


def _unmeasurable_report(item, report, reason: str) -> None:
    """A claim whose data do not allow its statistics is inconclusive with that reason: recorded like any
    verdict, and the test passes, xfails or fails by expected/ as a measured one would."""
    item.stash[CHECKED] = True
    if item.config.getoption("--repro-preflight"):
        from .preflight import note  # registered as a plugin of its own (pytest_plugins): imported by pytest first
        note(item, f"not measurable at preflight sizes: {reason}")
        if report.when == "call":
            report.outcome, report.longrepr = "passed", None
        else:
            report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1] or 0, reason)
        return
    record, failure = _record(item, None, reason)
    _publish(item, report, record)
    if record["outcome"] == "failed":
        report.longrepr = "\n".join(failure)
    elif record["outcome"] == "known finding":
        report.outcome, report.wasxfail = "skipped", f"known finding ({record['claim']} inconclusive): {reason}"
    elif report.when == "call":
        report.outcome, report.longrepr = "passed", None
    else:  # setup could not finish, so the test body cannot run: shown as a skip that carries the reason
        report.outcome, report.longrepr = "skipped", (str(item.path), item.location[1] or 0,
                                                      f"{record['outcome']}: not measurable: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    if item.get_closest_marker("claim") is not None and not item.stash.get(CHECKED, False):
        pytest.fail(f"{item.nodeid}: a claim test must hand its measurement to `check`; it passed without a verdict",
                    pytrace=False)
    return result


# ---------------------------------------------------------------------------------------------
# collecting records (also from xdist workers) and writing the report


def pytest_runtest_logreport(report):
    # the record rides on the call report, or on the setup report of an instance whose setup found it
    # unmeasurable; the teardown report repeats the item's properties: one record per node id
    for name, value in report.user_properties:
        if name == PROPERTY:
            record = json.loads(value)
            _session_records[record["nodeid"]] = record


_session_records: dict[str, dict] = {}


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the report from forwarded records
    records = list(_session_records.values())
    _session_records.clear()
    if config.getoption("--repro-preflight"):
        return  # no verdicts: advclaims.preflight writes its own table
    config.stash[RECORDS] = records
    if not records:
        return
    device = _device(config)
    report = report_mod.build(records, budget=config.getoption("--repro-budget"), argv=sys.argv,
                              device=str(device), determinism=accel_mod.determinism(_accel(config, device),
                                                                                    _worker_threads(config)))
    out = config.getoption("--repro-report")
    if out:
        report_mod.write(out, report)
    against = config.getoption("--repro-compare")
    if against is not None:
        try:
            path = report_mod.find_run(_storage(config), against)
            changes = report_mod.compare(json.loads(path.read_text()), report)
            config.stash[COMPARISON] = report_mod.format_changes(changes, str(path))
            if config.getoption("--repro-compare-fail") and any(c["kind"] == "verdict flipped" for c in changes):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        except (FileNotFoundError, ValueError) as err:
            config.stash[COMPARISON] = [f"comparison skipped: {err}"]
    if config.getoption("--repro-autosave"):
        path = report_mod.save_run(_storage(config), report)
        config.stash[COMPARISON] = config.stash.get(COMPARISON, []) + [f"run saved as {path}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    records = config.stash.get(RECORDS, [])
    if not records:
        return
    tr = terminalreporter
    tr.section("advclaims: claims")
    for r in sorted(records, key=lambda r: (report_mod._claim_order(r["claim"]), r["dataset"])):
        c = report_mod.headline(r)
        more = f" +{len(r['checks']) - 1}" if len(r["checks"]) > 1 else ""
        depends = f" [depends on {', '.join(r['depends_on'])}]" if r.get("depends_on") else ""
        tr.write_line(f"{r['claim']:<6} {r.get('variant', r['dataset']):<14} {r['verdict']:<13} {r['outcome']:<14} "
                      f"{c['statistic']}{more} = {report_mod._interval(c)} ({c['comparator']} {c['threshold']:g})"
                      f"{depends}")
    out = config.getoption("--repro-report")
    if out:
        tr.write_line(f"report: {Path(out) / 'report.md'}")
    for line in config.stash.get(COMPARISON, []):
        tr.write_line(line)
