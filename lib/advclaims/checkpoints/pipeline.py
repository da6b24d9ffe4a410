"""The one-way data flow: dataset -> trained model (store) -> adversarial set (store) -> analysis.

Fixtures and the command line both go through ``Pipeline``, so a model asked for by any claim,
test worker or ``advclaims train`` is the same checkpoint, trained once. Models from outside the suite
(``--repro-model``, ``advclaims import``) come through the ``ExternalModels`` mixin (``advclaims.checkpoints.own_models``).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

from advclaims import accel as accel_mod
from advclaims import timing
from advclaims import budgets as budgets_mod
from advclaims import data as data_mod
from advclaims.checkpoints import distributed
from advclaims.checkpoints import external
from advclaims.checkpoints import health as health_mod
from advclaims import models as models_mod
from advclaims.attacks import fgsm, pgd
from advclaims.evaluation import attack_batched
from advclaims.checkpoints.own_models import ExternalModels
from advclaims.checkpoints import keys
from advclaims.checkpoints.store import Entry, Store
from advclaims.checkpoints.artifacts import AdversarialSet, DatasetBundle, TrainedModel, attack_params
from advclaims.budgets import REGULAR_WEIGHT_DECAY, Recipe
from advclaims.checkpoints.training import train

@functools.lru_cache(maxsize=None)
def _has_batchnorm(arch: str) -> bool:
    """Whether ``arch`` has BatchNorm layers (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        net = models_mod.build(arch, in_channels=3, num_classes=10)
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


class Pipeline(ExternalModels):
    def __init__(self, *, budget: "str | budgets_mod.Budget" = "smoke", store: Store | None = None, data_root=None,
                 device: str | torch.device = "cpu", download: bool = False, progress: bool = True,
                 accel: accel_mod.Accel | None = None, enforce_health: bool = True, preflight: bool = False,
                 external_models: dict[str, str] | None = None, stage_maps: dict[str, dict[str, str]] | None = None,
                 published: dict[str, dict[str, float]] | None = None):
        self.budget = budget if isinstance(budget, budgets_mod.Budget) else budgets_mod.get(budget)
        if preflight and not self.budget.preflight:
            self.budget = self.budget.for_preflight()
        self.store = store or Store()
        self.data_root = Path(data_root).expanduser() if data_root else data_mod.default_root()
        self.device = torch.device(device)
        self.accel = accel or accel_mod.resolve(self.device)
        if self.accel.device != self.device:
            raise ValueError(f"accel settings are for {self.accel.device}, the pipeline runs on {self.device}")
        self.download = download
        self.progress = progress
        self.enforce_health = enforce_health  # False (preflight): the gate's verdict is reported, not enforced
        self._refused: dict[str, str] = {}     # store key -> the health gate's one line
        # --repro-model ROLE[@DATASET]=SPEC: claims use these instead of training (advclaims.checkpoints.external)
        self.external_models = dict(external_models or {})
        # --repro-stages ROLE[@DATASET]=STAGE:MODULE,...: where a user's layout keeps the stages the claims read
        self.stage_maps = dict(stage_maps or {})
        # --repro-published ROLE[@DATASET]=CLEAN[,ROBUST]: what the reference probe holds a --repro-model against
        self.published = dict(published or {})
        self._external: dict[tuple[str, str, str], TrainedModel] = {}  # (spec or name, role, dataset) -> model
        self.used: list[TrainedModel] = []     # every model handed out, in order (the report's model table)
        self._datasets: dict[str, DatasetBundle] = {}
        self._models: dict[str, TrainedModel] = {}
        self._sets: dict[str, AdversarialSet] = {}
        self._entries: dict[tuple[str, str], Entry] = {}  # (kind, key) -> an entry this process has fetched
        self._forwards: dict[str, torch.nn.Module] = {}

    # -- data ---------------------------------------------------------------------------------
    def dataset(self, name: str) -> DatasetBundle:
        if name not in self._datasets:
            meta = data_mod.info(name)
            load = functools.partial(data_mod.load, name, root=self.data_root, device=self.device,
                                     download=self.download)
            test_split = load("test").head(self.budget.test_images(name))
            self._datasets[name] = DatasetBundle(
                meta, lambda: load("train").subset(self.budget.train_images(name), seed=0), test_split)
        return self._datasets[name]

    # -- models -------------------------------------------------------------------------------
    def model_spec(self, role: str, dataset: str, *, arch: str = "resnet18",
                   weight_decay: float = REGULAR_WEIGHT_DECAY, seed: int = 0) -> dict:
        meta = data_mod.info(dataset)
        recipe: Recipe = self.budget.recipe(role, meta.eps, weight_decay=weight_decay)
        fields = {
            "arch": arch, "width": self.budget.width(arch), "dataset": dataset, "role": role,
            "train_images": self.budget.train_images(dataset), "budget": self.budget.name, "seed": seed,
            "recipe": recipe.as_dict(),
        }
        if self.budget.preflight:
            fields["preflight"] = True  # never the key of a real model, whatever store it lands in
        return self.spec_of("models", fields, arch=arch)

    # -- the store: one way to key and cache anything ------------------------------------------
    def spec_of(self, kind: str, fields: dict, *, arch: str | None = None, settings: bool = True) -> dict:
        """The store spec of an entry of ``kind`` with inputs ``fields`` (advclaims.checkpoints.keys): the kind's
        version, and unless ``settings`` is False (an entry that holds given data, such as an imported model's
        weights) this run's precision and the accelerator's keyed settings: deterministic, TF32; for a trained model
        also compile, and the world size where BatchNorm statistics are per rank (DDP on gloo; on CUDA training
        uses SyncBatchNorm). Attacks and analyses run eagerly, so compile keys models only."""
        keyed = {}
        if settings:
            world = distributed.world()[1]
            unsynced = kind == "models" and world > 1 and self.device.type != "cuda" and _has_batchnorm(arch)
            keyed = {"precision": self.accel.precision, **accel_mod.key_fields(self.accel, world, unsynced)}
            if kind != "models":
                keyed.pop("compile", None)
        return keys.spec(kind, fields, keyed)

    def key_of(self, kind: str, fields: dict, **how) -> str:
        """The store key of ``spec_of(kind, fields, **how)``."""
        return keys.key_of(self.spec_of(kind, fields, **how))

    def cached(self, kind: str, fields: dict, make, *, arch: str | None = None, settings: bool = True,
               replace: bool = False) -> Entry:
        """The store's entry of ``kind`` for ``fields`` (``spec_of``): loaded, or made once by ``make() ->
        (payload, metrics)`` and kept; held in this process after the first call. ``replace``: make it anew even if
        stored (``advclaims import --replace``)."""
        spec = self.spec_of(kind, fields, arch=arch, settings=settings)
        key = (kind, keys.key_of(spec))
        if replace or key not in self._entries:
            with timing.phase("store"):
                self._entries[key] = self.store.fetch(kind, spec, timing.timed(keys.PHASES[kind])(make),
                                                      device=self.device, replace=replace)
        return self._entries[key]

    def attack_images(self, model: TrainedModel, attack, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """``attack`` over (x, y) in the budget's batches on ``model``'s attack forward under this run's precision:
        how every stored adversarial set is made."""
        net = self._attack_forward(model)
        with self.accel.autocast():
            return attack_batched(attack, net, x, y, batch_size=self.budget.eval_batch, **kwargs)

    def model(self, role: str, dataset: str, *, arch: str = "resnet18", weight_decay: float = REGULAR_WEIGHT_DECAY,
              seed: int = 0, label: str | None = None) -> TrainedModel:
        slot = external.role_of(role, arch)
        given = self.external_models.get(f"{slot}@{dataset}", self.external_models.get(slot)) if slot else None
        if given is not None and weight_decay == REGULAR_WEIGHT_DECAY:  # LP-13's other sweep members train
            model = self.external(given, slot, dataset, label=label or role.upper())
        else:
            model = self._trained(role, dataset, arch=arch, weight_decay=weight_decay, seed=seed, label=label)
        self.used.append(model)
        return model

    def _trained(self, role: str, dataset: str, *, arch: str, weight_decay: float, seed: int,
                 label: str | None) -> TrainedModel:
        spec = self.model_spec(role, dataset, arch=arch, weight_decay=weight_decay, seed=seed)
        key = keys.key_of(spec)
        if key in self._models:
            return self._models[key]
        if key in self._refused:
            raise health_mod.ModelUnhealthy(self._refused[key])
        meta = data_mod.info(dataset)
        label = label or role.upper()

        def build() -> torch.nn.Module:
            torch.manual_seed(seed)
            return models_mod.build(arch, in_channels=meta.channels, num_classes=meta.num_classes,
                                    width=spec["width"], mean=meta.mean, std=meta.std,
                                    input_size=meta.size).to(self.device, memory_format=torch.channels_last)

        @timing.timed("training")
        def make():
            bundle = self.dataset(dataset)
            net = build()
            recipe = Recipe(**spec["recipe"])
            metrics = train(net, bundle.train, recipe, seed=seed, crop_pad=meta.crop_pad, flip=meta.flip,
                            progress=self.progress, desc=f"{label} {arch} {dataset}", accel=self.accel,
                            resume=self.store.resume_path("models", spec))
            if distributed.world()[0] != 0:
                return None  # torchrun: rank 0 evaluates and stores, the others only trained with it
            evaluation = bundle.test.head(health_mod.EVAL_IMAGES)
            with self.accel.autocast():
                metrics.update(health_mod.measure(net, evaluation.images(), evaluation.y, eps=meta.eps,
                                                  adversarial=role == "adv", batch_size=self.budget.eval_batch,
                                                  steps=self.budget.iterations(20)))
            return {k: v.cpu() for k, v in net.state_dict().items()}, metrics

        with timing.phase("store"):
            entry = distributed.fetch_once(self.store, "models", spec, make, device=self.device)
        net = build()
        net.load_state_dict(entry.payload)
        net.eval()
        verdict = health_mod.assess(entry.provenance["metrics"], num_classes=meta.num_classes,
                                    budget=self.budget, adversarial=role == "adv")
        trained = TrainedModel(label, net, spec, entry.path.stem, entry.provenance["metrics"], entry.made, verdict)
        if not verdict.healthy:
            line = health_mod.refusal(f"{label} ({arch} on {dataset}, store key {key})", verdict,
                                      recipe=spec["recipe"], path=entry.path, budget=self.budget.name)
            if self.enforce_health:
                self._refused[key] = line
                raise health_mod.ModelUnhealthy(line)
            warnings.warn(f"not enforced (preflight): {line}")
        self._models[key] = trained
        return trained

    def _attack_forward(self, model: TrainedModel) -> torch.nn.Module:
        """The forward attacks on ``model`` call: the eager model. Compiling it does not pay: a paper-budget set
        is seconds of GPU work (10,000 images, 21 passes) against tens of seconds of compilation, plus a
        recompilation at the partial last batch; compile serves training (accel.fast_forward there)."""
        return model.module

    # -- adversarial sets ---------------------------------------------------------------------
    def adversarial(self, model: TrainedModel, attack: str, dataset: str, *, seed: int = 0) -> AdversarialSet:
        """Attack the budget's test images on ``model``; cached in the store beside the model."""
        meta = data_mod.info(dataset)
        params = attack_params(attack, meta.eps, self.budget)
        fields = {"model": model.key, "attack": attack, "params": params, "dataset": dataset,
                  "test_n": self.budget.test_images(dataset), "seed": seed}
        key = keys.key_of(self.spec_of("adversarial", fields))
        if key in self._sets:
            return self._sets[key]
        bundle = self.dataset(dataset)
        x, y = bundle.test.images(), bundle.test.y

        def make():
            if attack == "fgsm":
                x_adv = self.attack_images(model, fgsm, x, y, **params)
            else:
                x_adv = self.attack_images(model, pgd, x, y, generator=torch.Generator().manual_seed(seed), **params)
            return {"x_adv": x_adv.cpu()}, {"images": len(y)}

        entry = self.cached("adversarial", fields, make)
        result = AdversarialSet(attack, params, model.label, x, entry.payload["x_adv"].to(self.device), y,
                                entry.provenance["spec"])
        self._sets[key] = result
        return result
