"""The --repro-* options and the ``repro_expected`` ini key: declared here, validated once (one line per mistake) and
read into one ``Settings`` (``read_settings``), the only place a --repro-* option is read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from advclaims import accel as accel_mod
from advclaims import budgets as budgets_mod
from advclaims import data as data_mod
from advclaims.checkpoints import external as external_mod
from advclaims.verdict import report as report_mod

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
    g.addoption("--repro-expected", default=None, metavar="DIR",
                help="expected/ folder (default: the repro_expected ini key, else <rootdir>/expected)")
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
    parser.addini("repro_expected", "the expected/ folder of the claims (relative to the ini file's folder)",
                  type="string", default="")


def worker_device(dev: torch.device, worker: str | None) -> torch.device:
    """This process's device: ``dev`` pinned to the xdist worker's GPU (``pin_worker``) and made current there, so
    that kernels, the caching allocator and the preflight's memory statistics are this GPU's, not cuda:0's (a
    replacement worker after a crash lands here too)."""
    dev = pin_worker(dev, worker)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return dev


def pin_worker(dev: torch.device, worker: str | None) -> torch.device:
    """xdist worker gwN gets GPU N mod the GPU count when the device is plain "cuda", so that
    ``-n <gpus>`` runs one worker per GPU; an explicit cuda:N, the CPU and the controller stay put."""
    if dev.type != "cuda" or dev.index is not None or not worker or not worker.startswith("gw"):
        return dev
    count = torch.cuda.device_count()
    return torch.device("cuda", int(worker[2:]) % count) if count > 0 else dev


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


def _repeated(options: dict, name: str) -> list:
    """The values of an option given once per value (pytest collects them in a list); anything else one usage error."""
    value = options.get(name)
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise pytest.UsageError(f"{name} {value!r}: give each value as its own {name} ROLE[@DATASET]=...")
    return list(value)


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
    models = external_models(_repeated(options, "--repro-model"), base)
    _covered("--repro-stages", stage_maps(_repeated(options, "--repro-stages")), models)
    _covered("--repro-published", published_accuracies(_repeated(options, "--repro-published")), models)
    _compare(options.get("--repro-compare"), bool(options.get("--repro-compare-fail")), storage)
    return ReproOptions(budget, device, _threads(options.get("--repro-threads"), workers, cpu_count))


@dataclass(frozen=True)
class Settings:
    """Everything a session's --repro-* options and ini keys say, validated: read once (``read_settings``) and
    held by the session object; nothing else reads an option."""

    budget: budgets_mod.Budget     # with the session's seeds, and cut for a preflight
    device: torch.device           # this process's device (an xdist worker's own GPU)
    accel: accel_mod.Accel
    store_root: Path | None        # the checkpoint store (None: the default; a preflight adds /preflight)
    data_root: str | None
    download: bool
    expected_dir: Path | None      # None: no expected/ found (the plugin is passive: no claims can run)
    expected_given: bool           # named by --repro-expected or the ini key (then it must exist)
    report_dir: Path | None
    storage: Path                  # saved runs
    autosave: bool
    compare: str | None
    compare_fail: bool
    external_models: dict
    stage_maps: dict
    published: dict
    quiet: bool
    threads: int | None            # torch threads of this process (None: torch's default)
    worker_threads: int            # torch threads each test process runs with (the report's determinism line)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.budget.seeds

    @property
    def preflight(self) -> bool:
        return self.budget.preflight


def _expected_dir(config) -> tuple[Path | None, bool]:
    """--repro-expected, else the ini key ``repro_expected`` (relative to the ini file), else <rootdir>/expected."""
    given = config.getoption("--repro-expected")
    if given:
        return Path(given).expanduser(), True
    ini = config.getini("repro_expected")
    if ini:
        base = config.inipath.parent if config.inipath else config.rootpath
        return (base / ini).resolve(), True
    default = config.rootpath / "expected"
    return (default if default.is_dir() else None), False


def read_settings(config) -> Settings:
    """The session's Settings; a mistaken option is one pytest.UsageError naming it and the fix."""
    opt = config.getoption
    storage = Path(opt("--repro-storage") or config.rootpath / ".repro-runs")
    workerinput = getattr(config, "workerinput", {})
    workers = int(workerinput.get("workercount", 1))
    checked = validate_options({name: opt(name) for name in VALIDATED_OPTIONS}, storage=storage,
                               cuda_count=torch.cuda.device_count(), workers=workers, cpu_count=os.cpu_count() or 1,
                               base=config.invocation_params.dir)
    device = worker_device(checked.device, workerinput.get("workerid"))
    preflight = bool(opt("--repro-preflight"))
    n = opt("--repro-seeds")
    budget = budgets_mod.get(checked.budget)
    budget = budget.with_seeds(tuple(range(n)) if n is not None else budget.seeds)
    if preflight:
        budget = budget.for_preflight()  # one seed, the least data and schedule
    controller_workers = getattr(config.option, "numprocesses", None)
    if checked.threads is not None:
        worker_threads = checked.threads
    elif isinstance(controller_workers, int) and controller_workers > 1:
        worker_threads = max(1, (os.cpu_count() or 1) // controller_workers)
    else:
        worker_threads = torch.get_num_threads()
    expected_dir, given = _expected_dir(config)
    models = external_models(opt("--repro-model"), config.invocation_params.dir)
    return Settings(
        budget=budget, device=device,
        accel=accel_mod.resolve(device, opt("--repro-precision"),
                                {"on": True, "off": False}.get(opt("--repro-compile"), "auto"),
                                deterministic=opt("--repro-deterministic")),
        store_root=Path(opt("--repro-cache")).expanduser() if opt("--repro-cache") else None,
        data_root=opt("--repro-data-root"), download=bool(opt("--repro-download")),
        expected_dir=expected_dir, expected_given=given,
        report_dir=Path(opt("--repro-report")) if opt("--repro-report") else None, storage=storage,
        autosave=bool(opt("--repro-autosave")), compare=opt("--repro-compare"),
        compare_fail=bool(opt("--repro-compare-fail")), external_models=models,
        stage_maps=stage_maps(opt("--repro-stages")), published=published_accuracies(opt("--repro-published")),
        quiet=bool(opt("--repro-quiet")), threads=checked.threads, worker_threads=worker_threads)
