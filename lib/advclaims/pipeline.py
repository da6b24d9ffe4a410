"""The one-way data flow: dataset -> trained model (store) -> adversarial set (store) -> analysis.

Fixtures and the command line both go through ``Pipeline``, so a model asked for by any claim,
test worker or ``advclaims train`` is the same checkpoint, trained once.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import accel as accel_mod
from . import budgets as budgets_mod
from . import data as data_mod
from . import distributed
from . import external
from . import health as health_mod
from . import iterations
from . import models as models_mod
from .attacks import fgsm, pgd
from .evaluation import attack_batched
from .store import Entry, Store
from .training import Recipe, train

PIPELINE_VERSION = 2  # bump when attack parameters or data subsets change meaning: cached sets rebuild


class DatasetBundle:
    """A dataset at a budget: its training subset (read on first use: a warm run never needs it)
    and its evaluation images (the test split's canonical-order prefix)."""

    def __init__(self, info: data_mod.DatasetInfo, load_train, test: data_mod.Split):
        self.info = info
        self.test = test
        self._load_train = load_train
        self._train: data_mod.Split | None = None

    @property
    def train(self) -> data_mod.Split:
        if self._train is None:
            self._train = self._load_train()
        return self._train


@dataclass
class TrainedModel:
    label: str                  # how reports name it, e.g. "STD" or "ADV"
    module: torch.nn.Module
    spec: dict
    key: str
    metrics: dict
    trained_now: bool
    health: health_mod.Health | None = None   # the health gate's verdict (None: not assessed)
    source: dict | None = None                # an external model's provenance (None: trained by the suite)

    def summary(self) -> dict:
        """What the report's model table shows of this model."""
        m = self.metrics
        return {"key": self.key, "label": self.label, "arch": self.spec.get("arch"), "width": self.spec.get("width"),
                "dataset": self.spec.get("dataset"), "role": self.spec.get("role"), "seed": self.spec.get("seed"),
                "source": self.source or {"kind": "trained", "budget": self.spec.get("budget")},
                "clean_accuracy": m.get("clean_accuracy"), "pgd20_accuracy": m.get("pgd20_accuracy"),
                "fgsm_accuracy": m.get("fgsm_accuracy"), "eval_images": m.get("eval_images"),
                "healthy": None if self.health is None else self.health.healthy}


@dataclass
class AdversarialSet:
    attack: str
    params: dict
    source: str                 # label of the model the attack ran on
    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    spec: dict = field(default_factory=dict)


def attack_params(name: str, eps: float) -> dict:
    """Evaluation attacks of docs/claims.md's common setting, scaled to the dataset's eps."""
    if name == "pgd20":
        return {"eps": eps, "alpha": eps / 8, "steps": 20, "random_start": True}  # step 1/255 at eps 8/255
    if name == "fgsm":
        return {"eps": eps}
    raise ValueError(f"unknown evaluation attack {name!r}: use pgd20 or fgsm")


def imported_spec(name: str, role: str, dataset: str) -> dict:
    """The store spec of a model imported under ``name``: a run names it, the key follows."""
    return {"imported": name, "role": role, "dataset": dataset, "version": 1}


def rebuild_imported(payload: dict, source: dict, dataset: str) -> torch.nn.Module:
    """The module of an imported model from its stored weights (an entry point is called, then loaded)."""
    meta = data_mod.info(dataset)
    if source["kind"] == "entry_point":
        net = external.build_from_entry_point(external.Source("entry_point", source["spec"], entry=source["spec"]))
    else:
        mean, std = ((0.0,) * meta.channels, (1.0,) * meta.channels) if source.get("raw") else (meta.mean, meta.std)
        net = models_mod.build(source["arch"], in_channels=meta.channels, num_classes=meta.num_classes,
                               width=source["width"], mean=mean, std=std, input_size=meta.size)
    try:
        net.load_state_dict(payload)
    except RuntimeError as err:
        raise external.ModelRefused(f"the imported weights no longer fit {source['spec']}: "
                                    f"{(str(err).splitlines() or [''])[0][:200]}") from None
    return net.eval()


class Pipeline:
    def __init__(self, *, budget: str = "smoke", store: Store | None = None, data_root=None,
                 device: str | torch.device = "cpu", download: bool = False, progress: bool = True,
                 accel: accel_mod.Accel | None = None, enforce_health: bool = True, preflight: bool = False,
                 external_models: dict[str, str] | None = None):
        self.budget = budgets_mod.get(budget)
        if preflight:
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
        # --repro-model ROLE[@DATASET]=SPEC: claims use these instead of training (advclaims.external)
        self.external_models = dict(external_models or {})
        self.used: list[TrainedModel] = []     # every model handed out, in order (the report's model table)
        self._datasets: dict[str, DatasetBundle] = {}
        self._models: dict[str, TrainedModel] = {}
        self._sets: dict[str, AdversarialSet] = {}
        self._forwards: dict[str, torch.nn.Module] = {}

    # -- data ---------------------------------------------------------------------------------
    def dataset(self, name: str) -> DatasetBundle:
        if name not in self._datasets:
            meta = data_mod.info(name)
            load = functools.partial(data_mod.load, name, root=self.data_root, device=self.device,
                                     download=self.download)
            test_split = load("test").head(self.budget.test_n)
            self._datasets[name] = DatasetBundle(
                meta, lambda: load("train").subset(self.budget.train_subset, seed=0), test_split)
        return self._datasets[name]

    # -- models -------------------------------------------------------------------------------
    def model_spec(self, role: str, dataset: str, *, arch: str = "resnet18", weight_decay: float = 5e-4,
                   seed: int = 0) -> dict:
        meta = data_mod.info(dataset)
        recipe: Recipe = self.budget.recipe(role, meta.eps, weight_decay=weight_decay)
        spec = {
            "arch": arch, "width": self.budget.width(arch), "dataset": dataset, "role": role,
            "train_images": self.budget.train_subset, "budget": self.budget.name, "seed": seed,
            "recipe": recipe.as_dict(), "precision": self.accel.precision,
        }
        if self.budget.preflight:
            spec["preflight"] = True  # never the key of a real model, whatever store it lands in
        return spec

    def model(self, role: str, dataset: str, *, arch: str = "resnet18", weight_decay: float = 5e-4,
              seed: int = 0, label: str | None = None) -> TrainedModel:
        slot = external.role_of(role, arch)
        given = self.external_models.get(f"{slot}@{dataset}", self.external_models.get(slot)) if slot else None
        if given is not None and weight_decay == 5e-4:  # a weight-decay sweep (LP-13) always trains its own
            model = self.external(given, slot, dataset, label=label or role.upper())
        else:
            model = self._trained(role, dataset, arch=arch, weight_decay=weight_decay, seed=seed, label=label)
        self.used.append(model)
        return model

    def _trained(self, role: str, dataset: str, *, arch: str, weight_decay: float, seed: int,
                 label: str | None) -> TrainedModel:
        if iterations.capped() and not self.budget.preflight:  # a capped model must never pass for a real one
            raise RuntimeError("iteration counts are capped (advclaims.iterations) outside a preflight: a preflight "
                               "session left its cap behind; nothing is trained under it")
        spec = self.model_spec(role, dataset, arch=arch, weight_decay=weight_decay, seed=seed)
        from .store import key_of

        key = key_of(spec)
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
                                                  adversarial=role == "adv", batch_size=self.budget.eval_batch))
            return {k: v.cpu() for k, v in net.state_dict().items()}, metrics

        entry = self._fetch_model(spec, make)
        net = build()
        net.load_state_dict(entry.payload)
        net.eval()
        verdict = health_mod.assess(entry.provenance["metrics"], num_classes=meta.num_classes,
                                    budget=self.budget.name, adversarial=role == "adv")
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

    def external(self, given: str, role: str, dataset: str, *, label: str) -> TrainedModel:
        """A model from outside (``advclaims.external``): an imported one by name, a checkpoint (ARCH:PATH) or an
        entry point (module:callable); inspected, measured once (kept in the store) and held to the health gate."""
        from .store import key_of

        if ":" not in given:  # a name given to ``advclaims import``
            spec = imported_spec(given, role, dataset)
            key = key_of(spec)
            if key not in self._models:
                def missing():
                    raise external.ModelRefused(f"no model named {given!r} was imported for role {role} on {dataset}: "
                                                f"advclaims import SPEC --role {role} --dataset {dataset} --name {given}")
                entry = self.store.fetch("imported", spec, missing, device=self.device)
                net = rebuild_imported(entry.payload, entry.provenance["metrics"]["source"], dataset)
                self._models[key] = self._gated(TrainedModel(
                    f"{label} ({given}, imported)", net.to(self.device), {**spec, "arch": entry.provenance["metrics"][
                        "source"].get("arch")}, key, entry.provenance["metrics"], False,
                    source=entry.provenance["metrics"]["source"]), role, dataset, entry.path)
            return self._models[key]
        source = external.parse_spec(given)
        digest = source.sha256()
        spec = {"external": source.text, "sha256": digest, "role": role, "dataset": dataset,
                "eval_images": min(health_mod.EVAL_IMAGES, len(self.dataset(dataset).test)), "version": 1}
        key = key_of(spec)
        if key not in self._models:
            net = external.build(source, dataset).to(self.device)

            def measure():
                return {}, self._measure(net, role, dataset)

            entry = self.store.fetch("external", spec, measure, device=self.device)
            provenance = {"kind": source.kind, "spec": source.text, "sha256": digest, "arch": source.arch}
            self._models[key] = self._gated(TrainedModel(
                f"{label} ({Path(source.text.split(':', 1)[1]).name if source.path else source.text})", net,
                {**spec, "arch": source.arch or "entry point"}, key, entry.provenance["metrics"], False,
                source=provenance), role, dataset, entry.path)
        return self._models[key]

    def import_model(self, given: str, role: str, dataset: str, *, name: str | None = None,
                     published: dict | None = None) -> tuple[str, dict]:
        """``advclaims import``: put an external model into the store under ``name`` with its provenance
        (source, sha256, "imported", the clean and PGD-20 accuracies measured now, published ones if given);
        refused in one line when it fails the inspection or the health gate. Returns (name, provenance)."""
        if role not in external.ROLES:
            raise external.ModelRefused(f"unknown role {role!r}: use one of {', '.join(external.ROLES)}")
        source = external.parse_spec(given)
        net = external.build(source, dataset).to(self.device)
        name = name or (source.path.stem if source.path else source.entry.split(":")[1])
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise external.ModelRefused(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        metrics = self._measure(net, role, dataset)
        arch = source.arch
        width = external.width_of(arch, net.state_dict()) if arch else None
        provenance = {"kind": source.kind, "spec": source.text, "sha256": source.sha256(), "arch": arch,
                      "width": width, "raw": source.raw, "imported": True, "name": name,
                      "published": dict(published or {})}
        model = TrainedModel(f"{name} (imported)", net, {"arch": arch, "dataset": dataset, "role": role}, name,
                             metrics, False, source=provenance)
        self._gated(model, role, dataset, source.path or source.entry)
        spec = imported_spec(name, role, dataset)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        entry = self.store.fetch("imported", spec, lambda: (state, {**metrics, "source": provenance,
                                                                    "health": model.health.as_dict()}),
                                 device=self.device)
        if not entry.made and entry.provenance["metrics"]["source"]["sha256"] != provenance["sha256"]:
            raise external.ModelRefused(f"a different model is already imported as {name!r} for role {role} on "
                                        f"{dataset} ({entry.path}); pick another --name")
        return name, entry.provenance

    def _measure(self, net: torch.nn.Module, role: str, dataset: str) -> dict:
        """What the health gate reads, on the first evaluation images."""
        meta = data_mod.info(dataset)
        evaluation = self.dataset(dataset).test.head(health_mod.EVAL_IMAGES)
        with self.accel.autocast():
            return health_mod.measure(net, evaluation.images(), evaluation.y, eps=meta.eps,
                                      adversarial=external.ROLES[role][0] == "adv", batch_size=self.budget.eval_batch)

    def _gated(self, model: TrainedModel, role: str, dataset: str, path) -> TrainedModel:
        """``model`` with its health verdict; an unhealthy external model is refused in one line."""
        verdict = health_mod.assess(model.metrics, num_classes=data_mod.info(dataset).num_classes,
                                    budget=self.budget.name, adversarial=external.ROLES[role][0] == "adv")
        model.health = verdict
        if not verdict.healthy and self.enforce_health:
            raise health_mod.ModelUnhealthy(health_mod.refusal(
                f"{model.label} (role {role} on {dataset})", verdict, recipe=None, path=path, budget=self.budget.name))
        return model

    def _fetch_model(self, spec: dict, make) -> "Entry":
        """``store.fetch`` of a model; under torchrun every rank trains (DDP) and rank 0 stores.

        Rank 0 takes the key's lock and decides: when the checkpoint loads, it tells the other
        ranks to load it too; when it must be built, all ranks train together, rank 0 evaluates
        and writes it, and the others load it after a barrier.
        """
        rank, world = distributed.world()
        if world == 1:
            return self.store.fetch("models", spec, make, device=self.device)
        dist = torch.distributed
        flag = torch.zeros(1, dtype=torch.long, device=self.device if dist.get_backend() == "nccl" else "cpu")
        if rank == 0:
            def lead():
                flag.fill_(1)
                dist.broadcast(flag, 0)  # "train with me"
                return make()

            entry = self.store.fetch("models", spec, lead, device=self.device)
            if not entry.made:
                dist.broadcast(flag, 0)  # flag is 0: "it is stored, load it"
            dist.barrier()
            return entry
        dist.broadcast(flag, 0)
        if int(flag.item()) == 1:
            make()
        dist.barrier()

        def refuse():
            raise RuntimeError(f"rank {dist.get_rank()}: rank 0 did not store the model it trained; see its log")

        return self.store.fetch("models", spec, refuse, device=self.device)

    def _attack_forward(self, model: TrainedModel) -> torch.nn.Module:
        """The forward attacks on ``model`` call: compiled once per model (on CUDA), not once per set.
        First-order attacks only: compile is never used for double backward."""
        if model.key not in self._forwards:
            self._forwards[model.key] = accel_mod.fast_forward(model.module, self.accel)
        return self._forwards[model.key]

    # -- adversarial sets ---------------------------------------------------------------------
    def adversarial(self, model: TrainedModel, attack: str, dataset: str, *, seed: int = 0) -> AdversarialSet:
        """Attack the budget's test images on ``model``; cached in the store beside the model."""
        meta = data_mod.info(dataset)
        params = attack_params(attack, meta.eps)
        spec = {"model": model.key, "attack": attack, "params": params, "dataset": dataset,
                "test_n": self.budget.test_n, "seed": seed, "version": PIPELINE_VERSION,
                "precision": self.accel.precision}
        from .store import key_of

        key = key_of(spec)
        if key in self._sets:
            return self._sets[key]
        bundle = self.dataset(dataset)
        x, y = bundle.test.images(), bundle.test.y

        def make():
            net = self._attack_forward(model)
            with self.accel.autocast():
                if attack == "fgsm":
                    x_adv = attack_batched(fgsm, net, x, y, batch_size=self.budget.eval_batch, **params)
                else:
                    g = torch.Generator().manual_seed(seed)
                    x_adv = attack_batched(pgd, net, x, y, batch_size=self.budget.eval_batch, generator=g,
                                           **params)
            return {"x_adv": x_adv.cpu()}, {"images": len(y)}

        entry = self.store.fetch("adversarial", spec, make, device=self.device)
        result = AdversarialSet(attack, params, model.label, x, entry.payload["x_adv"].to(self.device), y, spec)
        self._sets[key] = result
        return result
