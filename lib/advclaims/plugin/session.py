"""One object per pytest session, registered with the plugin manager (as pytest-benchmark registers its
``BenchmarkSession``): the settings read from the options, the claims catalogue of expected/, the pipeline, and
the records of every claim instance, which it pools over training seeds, reports and compares at the end.

Fixtures and hooks reach it as ``session_of(config)``; nothing else in the plugin keeps state.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from advclaims import accel as accel_mod
from advclaims import budgets as budgets_mod
from advclaims import data as data_mod
from advclaims.checkpoints import provenance
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.checkpoints.store import Store
from advclaims.plugin import preflight, reporting
from advclaims.plugin.options import Settings, read_settings
from advclaims import timing
from advclaims.plugin.stash import CHECKED, DECLARED, RECORD, SEED_PART, SESSION, STARTED, USED_FROM
from advclaims.verdict import expected as expected_mod
from advclaims.verdict import pooling, records
from advclaims.verdict import report as report_mod
from advclaims.verdict.measurement import Measurement

PLUGIN_NAME = "advclaims-session"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # validate early: a bad option is one usage error now, not 600 failed tests or a lost report later
    session = ReproSession(config)
    config.stash[SESSION] = session
    config.pluginmanager.register(session, PLUGIN_NAME)


def pytest_unconfigure(config):
    session = config.stash.get(SESSION, None)
    if session is not None and config.pluginmanager.is_registered(session):
        config.pluginmanager.unregister(session)


class ReproSession:
    """The session's settings, catalogue, pipeline and records (see the module docstring)."""

    def __init__(self, config):
        self.config = config
        self.settings: Settings = read_settings(config)
        if self.settings.threads is not None:
            torch.set_num_threads(self.settings.threads)
        self.catalogue = self._load_catalogue()
        self._pipeline: Pipeline | None = None
        self.records: dict[str, dict] = {}        # node id -> record (the controller's, at the end)
        self.parts: dict[str, dict[int, dict]] = {}   # instance -> seed -> its part (several seeds)
        self.crashed: dict[str, str] = {}         # node id -> xdist's line, for instances whose worker died
        self.comparison: list[str] = []
        self.failures: list[list[str]] = []       # failure lines of instances decided at the end (pooled seeds)
        self.preflight_rows: dict[str, dict] = {}

    # -- what the session knows --------------------------------------------------------------------------------

    @property
    def budget(self) -> budgets_mod.Budget:
        return self.settings.budget

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.settings.seeds

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def _load_catalogue(self) -> dict:
        folder = self.settings.expected_dir
        if folder is None:
            return {}  # no expected/ here (the plugin is installed, this project has no claims): nothing to check
        if not folder.is_dir():
            raise pytest.UsageError(f"expected/ folder {folder} (from --repro-expected or the repro_expected ini key) "
                                    f"does not exist: point it at the claims' expected/")
        try:
            return expected_mod.load(folder)
        except expected_mod.ExpectedError as err:
            raise pytest.UsageError(f"expected/ is malformed: {err}") from None

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline of this process (built on first use: a run that trains nothing never opens the store)."""
        if self._pipeline is None:
            s = self.settings
            store = Store(s.store_root)
            self._pipeline = Pipeline(
                budget=s.budget, store=Store(store.root / "preflight") if s.preflight else store,
                enforce_health=not s.preflight, external_models=s.external_models, stage_maps=s.stage_maps,
                published=s.published, data_root=s.data_root, device=s.device, download=s.download,
                progress=not s.quiet and sys.stderr.isatty(), accel=s.accel)
        return self._pipeline

    # -- one claim instance ------------------------------------------------------------------------------------

    def started(self, item) -> None:
        item.stash[STARTED] = time.perf_counter()
        timing.reset()
        item.stash[USED_FROM] = len(self._pipeline.used) if self._pipeline is not None else 0

    def models_used(self, item) -> tuple[dict, ...]:
        """The models the instance was handed (trained or external), one summary per model."""
        if self._pipeline is None:
            return ()
        seen: dict[str, dict] = {}
        for model in self._pipeline.used[item.stash.get(USED_FROM, 0):]:
            seen.setdefault(model.key, model.summary())
        return tuple(seen.values())

    def instance(self, item, *, seeds: tuple[int, ...] | None = None) -> records.Instance:
        """The claim instance of a test item: its claim, dataset, other parameters and seeds."""
        marker = item.get_closest_marker("claim")
        if marker is None:
            raise pytest.UsageError(f"{item.nodeid} uses `check` but has no @pytest.mark.claim(\"ID\")")
        callspec = getattr(item, "callspec", None)
        params = dict(callspec.params) if callspec else {}
        dataset = params.pop("dataset", None)
        if dataset is None:
            raise pytest.UsageError(f"{item.nodeid}: a claim test must be parametrised over datasets (on_datasets)")
        seed = params.pop("repro_seed", None)
        variant = "-".join(p for p in callspec.id.split("-") if seed is None or p != f"seed{seed}")
        others = tuple(str(v) for k, v in sorted(params.items()))
        others += tuple(p for p in variant.split("-") if p != dataset and p not in others)
        return records.Instance(self.catalogue[marker.args[0]], dataset, self.budget.name,
                                seeds if seeds is not None else self.seeds, variant, others,
                                instance_id(item.nodeid, seed), self.proxy(dataset), self.models_used(item),
                                item.stash.get(DECLARED, None))

    def proxy(self, dataset: str) -> dict | None:
        """The proxy marker of ``dataset`` under the session's data root (advclaims.data.proxy), or None."""
        root = self.settings.data_root
        try:
            return data_mod.proxy_marker(dataset, Path(root).expanduser() if root else data_mod.default_root())
        except data_mod.DatasetCorrupt:
            return None

    def seed_of(self, item) -> int | None:
        """The training seed of an item run once per seed (None: the instance runs once)."""
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("repro_seed") if callspec is not None else None

    def hand_over(self, item, measurement: Measurement) -> None:
        """A claim test's Measurement (``check``): decided now when the instance runs once; with several seeds
        kept as this seed's part, and decided at the end when every seed's part is in."""
        item.stash[CHECKED] = True
        wall = time.perf_counter() - item.stash.get(STARTED, time.perf_counter())
        profile = timing.profile(wall)
        seed = self.seed_of(item)
        if seed is not None:
            instance = self.instance(item, seeds=(seed,))
            figures, errors = (reporting.draw(instance, measurement, self.settings.report_dir)
                               if seed == self.seeds[0] else ([], []))
            self.publish(item, None, SEED_PART, {
                "instance": instance.nodeid, "seed": seed, "claim": instance.spec.id, "dataset": instance.dataset,
                "variant": instance.variant, "others": list(instance.others), "models": list(instance.models),
                "wall_seconds": wall, "profile": profile, "figures": figures, "figure_errors": errors,
                "declared": sorted(instance.declared) if instance.declared is not None else None,
                "measurement": measurement.to_payload()})
            return
        instance = self.instance(item, seeds=self.seeds if self._runs_per_seed(item) else self.seeds[:1])
        record = records.measured(instance, measurement, wall_seconds=wall, profile=profile)
        if self.settings.preflight:
            return  # every step up to the verdict runs; the verdict is not shown
        record.figures, record.figure_errors = reporting.draw(instance, measurement, self.settings.report_dir)
        self.publish(item, None, RECORD, record.as_dict())
        if record.outcome.xfails:
            pytest.xfail(f"{record.outcome} ({record.claim} {record.verdict} on {record.dataset}/{record.budget}): "
                         f"{record.expected_reason}")
        if record.outcome is records.Outcome.FAILED:
            pytest.fail("\n".join(record.failure_lines()), pytrace=False)

    def _runs_per_seed(self, item) -> bool:
        return "repro_seed" in getattr(item, "fixturenames", ())

    @staticmethod
    def publish(item, report, name: str, payload: dict) -> None:
        """Send ``payload`` to the controller with the item's reports (pytest-xdist carries user properties)."""
        prop = (name, json.dumps(payload, default=str))
        item.user_properties.append(prop)
        if report is not None and prop not in report.user_properties:
            report.user_properties.append(prop)

    # -- the controller: records in, report out ------------------------------------------------------------------

    def pytest_runtest_logreport(self, report):
        if self.settings.preflight:
            preflight.collect(self, report)
            return
        # a record rides on the call report (or on the setup report of an instance whose setup found it
        # unmeasurable or raised); the teardown report repeats the item's properties: one per node id
        for name, value in report.user_properties:
            if name == RECORD:
                record = json.loads(value)
                self.records[record["nodeid"]] = record
            elif name == SEED_PART:
                part = json.loads(value)
                self.parts.setdefault(part["instance"], {})[part["seed"]] = part
        if report.failed and "crashed while running" in str(report.longrepr):
            # pytest-xdist's report for an instance whose worker died: the worker sent no record
            self.crashed[report.nodeid] = str(report.longrepr).strip().splitlines()[0][:300]

    def pytest_sessionfinish(self, session):
        if self.is_worker:
            return  # xdist workers: the controller reports from the records they forwarded
        if self.settings.preflight:
            preflight.finish(self)  # no verdicts: the preflight's own table
            return
        self._crash_rows()
        self._pool_seeds()
        recs = list(self.records.values())
        if not recs:
            return
        if self.failures:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        report = report_mod.build(recs, budget=self.budget.name, argv=sys.argv, machine=provenance.machine(
            self.settings.device), commit=provenance.commit(), determinism=accel_mod.determinism(
            self.settings.accel, self.settings.worker_threads))
        if self.settings.report_dir:
            report_mod.write(self.settings.report_dir, report)
        self._compare_and_save(session, report)

    def _crash_rows(self) -> None:
        for nodeid, line in self.crashed.items():
            if nodeid in self.records or instance_id(nodeid, None) in self.parts:
                continue
            try:
                record = reporting.crash_record(self, nodeid, line)
            except Exception as err:  # a broken row must not hide the others
                warnings.warn(f"advclaims: no error row for {nodeid}: {type(err).__name__}: {err}")
                record = None
            if record is not None:
                self.records[nodeid] = record

    def _pool_seeds(self) -> None:
        """Every instance run once per seed: its seeds' Measurements pooled into one record, decided here. A seed
        that raised makes the instance an error row; one that could not be measured makes it inconclusive."""
        for nodeid, parts in sorted(self.parts.items()):
            seeds = tuple(sorted(parts))
            first = parts[seeds[0]]
            spec = self.catalogue[first["claim"]]
            models = {m["key"]: m for s in seeds for m in parts[s]["models"]}
            declared = first.get("declared")
            instance = records.Instance(spec, first["dataset"], self.budget.name, seeds, first["variant"],
                                        tuple(first["others"]), nodeid, self.proxy(first["dataset"]),
                                        tuple(models.values()), None if declared is None else frozenset(declared))
            wall = sum(parts[s]["wall_seconds"] for s in seeds)
            errors = [f"seed {s}: {parts[s]['error']}" for s in seeds if parts[s].get("error")]
            unmeasurable = [f"seed {s}: {parts[s]['unmeasurable']}" for s in seeds if parts[s].get("unmeasurable")]
            if errors:
                record = records.errored(instance, "; ".join(errors), wall_seconds=wall)
            elif unmeasurable:
                record = records.unmeasured(instance, "; ".join(unmeasurable), wall_seconds=wall)
            else:
                pooled = pooling.pool([Measurement.from_payload(parts[s]["measurement"]) for s in seeds], seeds)
                record = records.measured(instance, pooled, wall_seconds=wall,
                                          profile=timing.add([parts[s].get("profile", {}) for s in seeds]))
                record.figures, record.figure_errors = first["figures"], first["figure_errors"]
            missing = sorted(set(self.seeds) - set(seeds))
            if missing:
                record.notes.append(f"seeds {missing} of the session did not run for this instance (deselected?): "
                                    f"pooled over {list(seeds)}")
            if record.outcome is records.Outcome.FAILED:
                self.failures.append(record.failure_lines())
            self.records[nodeid] = record.as_dict()

    def _compare_and_save(self, session, report: dict) -> None:
        s = self.settings
        if s.compare is not None:
            try:
                path = report_mod.find_run(s.storage, s.compare)
                changes = report_mod.compare(json.loads(path.read_text()), report)
                self.comparison = report_mod.format_changes(changes, str(path))
                if s.compare_fail and any(c["kind"] == "verdict flipped" for c in changes):
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED
            except (FileNotFoundError, ValueError) as err:
                self.comparison = [f"comparison skipped: {err}"]
        if s.autosave:
            path = report_mod.save_run(s.storage, report)
            self.comparison.append(f"run saved as {path}")

    def pytest_terminal_summary(self, terminalreporter):
        if self.settings.preflight:
            preflight.terminal_summary(self, terminalreporter)
        else:
            reporting.terminal_summary(self, terminalreporter)


def instance_id(nodeid: str, seed: int | None) -> str:
    """The node id of a claim instance without its seed: ``test_x[fashion_mnist-seed1]`` -> ``test_x[fashion_mnist]``."""
    if not nodeid.endswith("]"):
        return nodeid
    head, _, params = nodeid[:-1].rpartition("[")
    parts = [p for p in params.split("-") if not (p.startswith("seed") and p[4:].isdigit()
                                                   and (seed is None or p == f"seed{seed}"))]
    return f"{head}[{'-'.join(parts)}]" if parts else head

