"""The one-way data flow: dataset -> trained model (store) -> adversarial set (store) -> analysis.

Fixtures and the command line both go through ``Pipeline``, so a model asked for by any claim,
test worker or ``advclaims train`` is the same checkpoint, trained once. Models from outside the suite
(``--repro-model``, ``advclaims import``) come through the ``ExternalModels`` mixin (``advclaims.own_models``).
"""

from __future__ import annotations

import functools
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
from .own_models import ExternalModels
from .store import Entry, Store
from .training import Recipe, train

PIPELINE_VERSION = 2  # bump when attack parameters or data subsets change meaning: cached sets rebuild


@functools.lru_cache(maxsize=None)
def _has_batchnorm(arch: str) -> bool:
    """Whether ``arch`` has BatchNorm layers (built on the meta device: no memory, no weights)."""
    with torch.device("meta"):
        net = models_mod.build(arch, in_channels=3, num_classes=10)
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


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


class Pipeline(ExternalModels):
    def __init__(self, *, budget: str = "smoke", store: Store | None = None, data_root=None,
                 device: str | torch.device = "cpu", download: bool = False, progress: bool = True,
                 accel: accel_mod.Accel | None = None, enforce_health: bool = True, preflight: bool = False,
                 external_models: dict[str, str] | None = None, stage_maps: dict[str, dict[str, str]] | None = None,
                 published: dict[str, dict[str, float]] | None = None):
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
        # --repro-stages ROLE[@DATASET]=STAGE:MODULE,...: where a user's layout keeps the stages the claims read
        self.stage_maps = dict(stage_maps or {})
        # --repro-published ROLE[@DATASET]=CLEAN[,ROBUST]: what the reference probe holds a --repro-model against
        self.published = dict(published or {})
        self._external: dict[tuple[str, str, str], TrainedModel] = {}  # (spec or name, role, dataset) -> model
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
        spec.update(self.training_fields(arch))
        if self.budget.preflight:
            spec["preflight"] = True  # never the key of a real model, whatever store it lands in
        return spec

    # -- store keys: what changes the numbers ---------------------------------------------------
    def training_fields(self, arch: str) -> dict:
        """What besides the recipe and precision changes a trained model's weights (accel.key_fields): compile,
        deterministic, TF32, and the world size where BatchNorm statistics are per rank (DDP on gloo; on CUDA
        training uses SyncBatchNorm). Empty on a default CPU run, so its keys stay what they were."""
        world = distributed.world()[1]
        unsynced = world > 1 and self.device.type != "cuda" and _has_batchnorm(arch)
        return accel_mod.key_fields(self.accel, world, unsynced)

    def attack_fields(self) -> dict:
        """What besides the model, attack and images changes an adversarial set: precision (bf16 autocast),
        deterministic, TF32. Attacks run eagerly (``_attack_forward``), so compile is not among them. Shared by
        every attacked set (``adversarial``, LP-4's extension, the targeted sets) so that their keys agree."""
        return {"precision": self.accel.precision,
                **{k: v for k, v in accel_mod.key_fields(self.accel).items() if k != "compile"}}

    def attack_images(self, model: TrainedModel, attack, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """``attack`` over (x, y) in the budget's batches on ``model``'s attack forward under this run's precision:
        how every stored adversarial set is made."""
        net = self._attack_forward(model)
        with self.accel.autocast():
            return attack_batched(attack, net, x, y, batch_size=self.budget.eval_batch, **kwargs)

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
        """The forward attacks on ``model`` call: the eager model. Compiling it does not pay: a paper-budget set
        is seconds of GPU work (10,000 images, 21 passes) against tens of seconds of compilation, plus a
        recompilation at the partial last batch; compile serves training (accel.fast_forward there)."""
        return model.module

    # -- adversarial sets ---------------------------------------------------------------------
    def adversarial(self, model: TrainedModel, attack: str, dataset: str, *, seed: int = 0) -> AdversarialSet:
        """Attack the budget's test images on ``model``; cached in the store beside the model."""
        meta = data_mod.info(dataset)
        params = attack_params(attack, meta.eps)
        spec = {"model": model.key, "attack": attack, "params": params, "dataset": dataset,
                "test_n": self.budget.test_n, "seed": seed, "version": PIPELINE_VERSION, **self.attack_fields()}
        from .store import key_of

        key = key_of(spec)
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

        entry = self.store.fetch("adversarial", spec, make, device=self.device)
        result = AdversarialSet(attack, params, model.label, x, entry.payload["x_adv"].to(self.device), y, spec)
        self._sets[key] = result
        return result
