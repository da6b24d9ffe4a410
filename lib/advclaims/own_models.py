"""The pipeline's models from outside the suite (``advclaims.external``): ``--repro-model`` and ``advclaims import``.

A mixin of ``Pipeline``: each external model is built, identified by its content (the hash of its state dict
after loading, with its code), measured once on the evaluation images (kept in the store) and held to the
health gate, the reference probe included: its published clean accuracy, or that of the suite's own model of
the same role and budget.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from . import data as data_mod
from . import external
from . import health as health_mod
from . import models as models_mod


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


class ExternalModels:
    """External models of a ``Pipeline`` (which gives ``store``, ``device``, ``budget``, ``accel``, ``dataset``,
    ``stage_maps``, ``enforce_health``, ``_models``, ``_external`` and ``_trained``)."""

    def external(self, given: str, role: str, dataset: str, *, label: str) -> "TrainedModel":
        """A model from outside (``advclaims.external``): an imported one by name, a checkpoint (ARCH:PATH) or an
        entry point (module:callable); inspected, measured once (kept in the store) and held to the health gate.
        Its key covers the hash of its state dict after loading: other weights are another model."""
        from .pipeline import TrainedModel
        from .store import key_of

        if (given, role, dataset) in self._external:
            return self._external[(given, role, dataset)]
        stages = self.stage_maps.get(f"{role}@{dataset}", self.stage_maps.get(role))
        if ":" not in given:  # a name given to ``advclaims import``
            spec = imported_spec(given, role, dataset)

            def missing():
                raise external.ModelRefused(f"no model named {given!r} was imported for role {role} on {dataset}: "
                                            f"advclaims import SPEC --role {role} --dataset {dataset} --name {given}")
            entry = self.store.fetch("imported", spec, missing, device=self.device)
            stored = entry.provenance["metrics"]["source"]
            net = rebuild_imported(entry.payload, stored, dataset).to(self.device)
            digest = external.state_sha256(net)
            stages = stages or stored.get("stages")
            key = key_of({**spec, "state_sha256": digest})
            model = TrainedModel(f"{label} ({given}, imported)", net, {**spec, "arch": stored.get("arch") or
                                 "entry point"}, key, entry.provenance["metrics"], False,
                                 source={**stored, "state_sha256": digest, "stages": stages})
            published = stored.get("published") or {}
        else:
            source = external.parse_spec(given)
            read: list[dict] = []
            net = external.build(source, dataset, read).to(self.device)
            digest = external.state_sha256(net)
            spec = {"external": source.text, "code_sha256": source.sha256() if source.path is None else None,
                    "state_sha256": digest, "role": role, "dataset": dataset,
                    "eval_images": min(health_mod.EVAL_IMAGES, len(self.dataset(dataset).test)), "version": 2}
            key = key_of(spec)

            def measure():
                return {}, self._measure(net, role, dataset)

            entry = self.store.fetch("external", spec, measure, device=self.device)
            provenance = {"kind": source.kind, "spec": source.text, "sha256": source.sha256(), "state_sha256": digest,
                          "arch": source.arch, "weights": read, "stages": stages}
            model = TrainedModel(
                f"{label} ({Path(source.text.split(':', 1)[1]).name if source.path else source.text})", net,
                {**spec, "arch": source.arch or "entry point"}, key, entry.provenance["metrics"], False,
                source=provenance)
            published = {}
        if stages:
            external.check_stages(net, stages, given)
        external.set_stages(net, stages, role)
        if key in self._models:  # the same content under another spec or name: one model
            model = self._models[key]
        else:
            self._models[key] = self._gated(model, role, dataset, entry.path, published=published)
        self._external[(given, role, dataset)] = model
        return model

    def import_model(self, given: str, role: str, dataset: str, *, name: str | None = None,
                     published: dict | None = None, stages: dict[str, str] | None = None, replace: bool = False,
                     base=None) -> tuple[str, dict]:
        """``advclaims import``: put an external model into the store under ``name`` with its provenance
        (source, sha256 of its file or code and of its state dict, its weights files, "imported", the clean and
        PGD-20 accuracies measured now, published ones if given, its stage map); refused in one line when it fails
        the inspection or the health gate, or when ``name`` holds other weights and ``replace`` is not set.
        Returns (name, provenance)."""
        from .pipeline import TrainedModel

        if role not in external.ROLES:
            raise external.ModelRefused(f"unknown role {role!r}: use one of {', '.join(external.ROLES)}")
        source = external.parse_spec(given, base)
        read: list[dict] = []
        net = external.build(source, dataset, read).to(self.device)
        name = name or (source.path.stem if source.path else source.entry.split(":")[1])
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise external.ModelRefused(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        if stages:
            external.check_stages(net, stages, given)
        digest = external.state_sha256(net)
        spec = imported_spec(name, role, dataset)
        pt, meta, lock = self.store.paths("imported", spec)
        before = json.loads(meta.read_text()) if pt.exists() and meta.exists() else None
        if before is not None:
            old = before["metrics"]["source"]
            old_digest = old.get("state_sha256") or external.state_sha256(torch.load(pt, weights_only=True))
            if old_digest == digest and (stages is None or stages == old.get("stages")):
                return name, before
            if not replace:
                what = "other weights" if old_digest != digest else "another stage map"
                raise external.ModelRefused(
                    f"{name!r} is already imported for role {role} on {dataset} with {what} (state sha256 "
                    f"{old_digest[:12]}, from {old.get('spec')}; this one is {digest[:12]}): pass --replace to replace "
                    f"it, or pick another --name")
        metrics = self._measure(net, role, dataset)
        arch = source.arch
        width = external.width_of(arch, net.state_dict()) if arch else None
        provenance = {"kind": source.kind, "spec": source.text, "sha256": source.sha256(), "state_sha256": digest,
                      "arch": arch, "width": width, "raw": source.raw, "imported": True, "name": name,
                      "published": dict(published or {}), "weights": read, "stages": dict(stages or {}) or None}
        model = TrainedModel(f"{name} (imported)", net, {"arch": arch, "dataset": dataset, "role": role}, name,
                             metrics, False, source=provenance)
        self._gated(model, role, dataset, source.path or source.entry, published=published)
        if before is not None:  # --replace: the old entry goes, the new one is stored under the same name
            from filelock import FileLock

            with FileLock(str(lock)):
                pt.unlink(missing_ok=True)
                meta.unlink(missing_ok=True)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        entry = self.store.fetch("imported", spec, lambda: (state, {**metrics, "source": model.source,
                                                                    "health": model.health.as_dict()}),
                                 device=self.device)
        return name, entry.provenance

    def _measure(self, net: torch.nn.Module, role: str, dataset: str) -> dict:
        """What the health gate reads, on the first evaluation images."""
        meta = data_mod.info(dataset)
        evaluation = self.dataset(dataset).test.head(health_mod.EVAL_IMAGES)
        with self.accel.autocast():
            return health_mod.measure(net, evaluation.images(), evaluation.y, eps=meta.eps,
                                      adversarial=external.ROLES[role][0] == "adv", batch_size=self.budget.eval_batch)

    def _gated(self, model: "TrainedModel", role: str, dataset: str, path, published: dict | None = None) -> "TrainedModel":
        """``model`` with its health verdict, the reference probe included (``_reference``); an unhealthy
        external model is refused in one line."""
        verdict = health_mod.assess(model.metrics, num_classes=data_mod.info(dataset).num_classes,
                                    budget=self.budget.name, adversarial=external.ROLES[role][0] == "adv")
        if verdict.healthy and not self.budget.preflight:
            reference, what, record = self._reference(role, dataset, published)
            model.source = {**(model.source or {}), "reference": {**record, "clean_accuracy": reference}}
            failure = health_mod.reference_failure(model.metrics, reference, what)
            if failure:
                verdict = health_mod.with_failure(verdict, failure)
        model.health = verdict
        if not verdict.healthy and self.enforce_health:
            raise health_mod.ModelUnhealthy(health_mod.refusal(
                f"{model.label} (role {role} on {dataset})", verdict, recipe=None, path=path, budget=self.budget.name))
        return model

    def _reference(self, role: str, dataset: str, published: dict | None) -> tuple[float, str, dict]:
        """What an external model's clean accuracy is held against: its published one when given, else that of
        the suite's own model of the same role and budget (trained through the pipeline if it is not stored)."""
        if published and published.get("clean") is not None:
            what = "its published clean accuracy"
            return float(published["clean"]), what, {"what": what}
        training, archs = external.ROLES[role]
        ref = self._trained(training, dataset, arch=archs[0], weight_decay=5e-4, seed=0,
                            label=f"{training.upper()} (reference)")
        what = f"the suite's own {training.upper()} {archs[0]} at the {self.budget.name} budget"
        return float(ref.metrics["clean_accuracy"]), what, {"what": what, "key": ref.key,
                                                            "trained_now": ref.trained_now}
