"""The pipeline's models from outside the suite (``advclaims.checkpoints.external``): ``--repro-model`` and ``advclaims import``.

A mixin of ``Pipeline``: each external model is built, identified by its content (``identity``: for a checkpoint
its architecture, raw flag and the hash of its state dict after loading; for an entry point the module:callable,
the sha256 of its module file when the claims run and the state hash; never the file's path or an imported
name, which provenance records), measured once on the evaluation images (kept in the store) and held to the
health gate, the reference probe included: its published clean accuracy, or that of the suite's own model of
the same role and budget.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from typing import TYPE_CHECKING

import torch

from advclaims import data as data_mod
from advclaims.checkpoints import external
from advclaims.checkpoints import health as health_mod
from advclaims import models as models_mod

if TYPE_CHECKING:
    from advclaims.checkpoints.artifacts import TrainedModel


def imported_fields(name: str, role: str, dataset: str) -> dict:
    """What names a model imported under ``name`` in the store (kind "imported", no run settings: it holds the
    user's weights): a run names it, the key follows."""
    return {"imported": name, "role": role, "dataset": dataset}


def identity(kind: str, *, role: str, dataset: str, state_sha256: str, arch: str | None = None, raw: bool = False,
             entry: str | None = None, code_sha256: str | None = None) -> dict:
    """What identifies an external model, the spec of its store key: its content, never where it was read from.
    A checkpoint: its architecture, raw flag (the normalisation the suite puts inside) and the hash of its state
    dict after loading. An entry point: the module:callable, the sha256 of its module file (read when the claims
    run: other code is another model) and the state hash. Both: the role and dataset it fills. The same weights
    moved to another file, or imported under another name, are one model."""
    base = {"role": role, "dataset": dataset, "state_sha256": state_sha256}
    if kind == "checkpoint":
        return {"external": "checkpoint", "arch": arch, "raw": bool(raw), **base}
    return {"external": "entry_point", "entry": entry, "code_sha256": code_sha256, **base}


def _same_function(old: dict, source: external.Source) -> bool:
    """Whether an imported model's stored source and ``source`` build the same function from equal weights: a
    checkpoint of the same architecture and raw flag (wherever the file lies), or the same entry point with the
    same module file."""
    if old.get("kind") != source.kind:
        return False
    if source.kind == "checkpoint":
        return old.get("arch") == source.arch and bool(old.get("raw")) == source.raw
    return old.get("spec") == source.text and old.get("sha256") == source.sha256()


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
    ``stage_maps``, ``published``, ``enforce_health``, ``_models``, ``_external`` and ``_trained``)."""

    def _published(self, role: str, dataset: str) -> dict:
        """--repro-published ROLE[@DATASET]=CLEAN[,ROBUST] for this slot ({} when not given)."""
        published = getattr(self, "published", None) or {}
        return dict(published.get(f"{role}@{dataset}", published.get(role)) or {})

    def external(self, given: str, role: str, dataset: str, *, label: str) -> "TrainedModel":
        """A model from outside (``advclaims.checkpoints.external``): an imported one by name, a checkpoint (ARCH:PATH) or an
        entry point (module:callable); inspected, measured once (kept in the store) and held to the health gate.
        Its key is its content (``identity``): other weights or other code are another model, the same content
        under another path or imported name is the same one."""
        from advclaims.checkpoints.artifacts import TrainedModel

        if (given, role, dataset) in self._external:
            return self._external[(given, role, dataset)]
        stages = self.stage_maps.get(f"{role}@{dataset}", self.stage_maps.get(role))
        eval_images = min(health_mod.EVAL_IMAGES, len(self.dataset(dataset).test))
        if ":" not in given:  # a name given to ``advclaims import``
            spec = imported_fields(given, role, dataset)

            def missing():
                raise external.ModelRefused(f"no model named {given!r} was imported for role {role} on {dataset}: "
                                            f"advclaims import SPEC --role {role} --dataset {dataset} --name {given}")
            entry = self.cached("imported", spec, missing, settings=False)
            stored = entry.provenance["metrics"]["source"]
            # an entry point's module is read now: code changed since the import is another model
            code = (external.Source("entry_point", stored["spec"], entry=stored["spec"]).sha256()
                    if stored["kind"] == "entry_point" else None)
            net = rebuild_imported(entry.payload, stored, dataset).to(self.device)
            digest = external.state_sha256(net)
            stages = stages or stored.get("stages")
            ident = identity(stored["kind"], role=role, dataset=dataset, state_sha256=digest,
                             arch=stored.get("arch"), raw=bool(stored.get("raw")), entry=stored["spec"],
                             code_sha256=code)
            key = self.key_of("external", ident, settings=False)  # its identity: content, not this run's settings
            metrics = {k: v for k, v in entry.provenance["metrics"].items() if k not in ("source", "health")}
            source = {**stored, "state_sha256": digest, "stages": stages}
            path = entry.path
            if code is not None and code != stored.get("sha256"):
                # the module is not the one imported: inspected and measured anew (kept in the store)
                external.inspect(net, dataset, stored["spec"])
                measured = self.cached("external", {**ident, "eval_images": eval_images},
                                       lambda: ({}, self._measure(net, role, dataset)))
                metrics, path = measured.provenance["metrics"], measured.path
                source.update(sha256=code, sha256_at_import=stored.get("sha256"), measured="now: its module changed "
                              "since the import")
            published = {**(stored.get("published") or {}), **self._published(role, dataset)}
            source["published"] = published
            model = TrainedModel(f"{label} ({given}, imported)", net, {**spec, "arch": stored.get("arch") or
                                 "entry point"}, key, metrics, False, source=source)
        else:
            source_ = external.parse_spec(given)
            read: list[dict] = []
            net = external.build(source_, dataset, read).to(self.device)
            digest = external.state_sha256(net)
            ident = identity(source_.kind, role=role, dataset=dataset, state_sha256=digest, arch=source_.arch,
                             raw=source_.raw, entry=source_.entry,
                             code_sha256=source_.sha256() if source_.kind == "entry_point" else None)
            key = self.key_of("external", ident, settings=False)  # its identity: content, not this run's settings

            def measure():
                return {}, self._measure(net, role, dataset)

            entry = self.cached("external", {**ident, "eval_images": eval_images}, measure)
            path = source_.path or source_.text  # what a refusal names: the user's file or entry point
            published = self._published(role, dataset)
            # provenance: where it was read from (the path is not its identity)
            source = {"kind": source_.kind, "spec": source_.text, "sha256": source_.sha256(), "state_sha256": digest,
                      "arch": source_.arch, "raw": source_.raw, "weights": read, "stages": stages,
                      "published": published}
            model = TrainedModel(
                f"{label} ({Path(source_.text.split(':', 1)[1]).name if source_.path else source_.text})", net,
                {**ident, "arch": source_.arch or "entry point"}, key, entry.provenance["metrics"], False,
                source=source)
        if stages:
            external.check_stages(net, stages, given)
        if key in self._models:  # the same content under another spec or imported name: one model
            model = self._models[key]
        else:
            external.set_stages(net, stages, role)
            self._models[key] = self._gated(model, role, dataset, path, published=published)
        self._external[(given, role, dataset)] = model
        return model

    def import_model(self, given: str, role: str, dataset: str, *, name: str | None = None,
                     published: dict | None = None, stages: dict[str, str] | None = None, replace: bool = False,
                     base=None) -> tuple[str, dict, str]:
        """``advclaims import``: put an external model into the store under ``name`` with its provenance
        (source, sha256 of its file or code and of its state dict, its weights files, "imported", the clean and
        PGD-20 accuracies measured now, published ones if given, its stage map); refused in one line when it fails
        the inspection or the health gate, or when ``name`` holds another model (other weights, another stage map,
        or the same weights behind other code) and ``replace`` is not set. The same model from another file (the
        same weights, architecture and raw flag) keeps its accuracies: only its provenance changes.
        Returns (name, provenance, the one line saying what happened to a name already held, else "")."""
        from advclaims.checkpoints.artifacts import TrainedModel

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
        spec = imported_fields(name, role, dataset)
        pt, meta, lock = self.store.paths("imported", self.spec_of("imported", spec, settings=False))
        before = json.loads(meta.read_text()) if pt.exists() and meta.exists() else None
        what_happened = ""  # a first import: the caller's own line says it
        if before is not None:
            old = before["metrics"]["source"]
            old_digest = old.get("state_sha256") or external.state_sha256(torch.load(pt, weights_only=True))
            same_model = old_digest == digest and (stages is None or stages == old.get("stages"))
            if same_model and _same_function(old, source):
                return self._reprovenance(name, role, dataset, source, read, before, published)
            if not replace:
                what = ("other weights" if old_digest != digest else "another stage map"
                        if stages is not None and stages != old.get("stages") else
                        f"the same weights behind other code ({old.get('spec')}, module sha256 "
                        f"{str(old.get('sha256'))[:12]})")
                raise external.ModelRefused(
                    f"{name!r} is already imported for role {role} on {dataset} with {what} (state sha256 "
                    f"{old_digest[:12]}, from {old.get('spec')}; this one is {digest[:12]} from {source.text}): pass "
                    f"--replace to replace it, or pick another --name")
            what_happened = (f"replaced {name!r} (it held state sha256 {old_digest[:12]} from {old.get('spec')}): "
                             f"measured anew")
        metrics = self._measure(net, role, dataset)
        arch = source.arch
        width = external.width_of(arch, net.state_dict()) if arch else None
        provenance = {"kind": source.kind, "spec": source.text, "sha256": source.sha256(), "state_sha256": digest,
                      "arch": arch, "width": width, "raw": source.raw, "imported": True, "name": name,
                      "published": dict(published or {}), "weights": read, "stages": dict(stages or {}) or None}
        model = TrainedModel(f"{name} (imported)", net, {"arch": arch, "dataset": dataset, "role": role}, name,
                             metrics, False, source=provenance)
        self._gated(model, role, dataset, source.path or source.entry, published=published)
        entry = self._store_imported(spec, net, metrics, model, replace_old=before is not None)
        return name, entry.provenance, what_happened

    def _reprovenance(self, name: str, role: str, dataset: str, source: external.Source, read: list[dict],
                      before: dict, published: dict | None) -> tuple[str, dict, str]:
        """Re-import of the model ``name`` already holds (the same weights behind the same function): unchanged,
        or the same model from another file (or with other published accuracies): its provenance is updated, its
        accuracies measured at import kept."""
        from advclaims.checkpoints.artifacts import TrainedModel

        old = before["metrics"]["source"]
        new = {**old, "spec": source.text, "sha256": source.sha256(), "weights": read,
               "published": dict(published) if published else old.get("published") or {}}
        moved = (old.get("spec"), old.get("sha256"), old.get("weights")) != (new["spec"], new["sha256"], new["weights"])
        if not moved and new["published"] == (old.get("published") or {}):
            return name, before, (f"{name!r} already holds this model (state sha256 {old['state_sha256'][:12]}) from "
                                  f"{source.text}: nothing changed")
        metrics = {k: v for k, v in before["metrics"].items() if k not in ("source", "health")}
        stored = self.store.paths("imported", self.spec_of("imported", imported_fields(name, role, dataset),
                                                           settings=False))[0]
        net = rebuild_imported(torch.load(stored, weights_only=True), new, dataset)
        model = TrainedModel(f"{name} (imported)", net, {"arch": new.get("arch"), "dataset": dataset, "role": role},
                             name, metrics, False, source={k: v for k, v in new.items() if k != "reference"})
        self._gated(model, role, dataset, source.path or source.entry, published=new["published"])
        entry = self._store_imported(imported_fields(name, role, dataset), net, metrics, model, replace_old=True)
        what = (f"{name!r} already held these weights (state sha256 {old['state_sha256'][:12]}), imported from "
                f"{old.get('spec')} (sha256 {str(old.get('sha256'))[:12]}); its provenance now names {source.text} "
                f"(sha256 {new['sha256'][:12]}), the accuracies measured at import are kept" if moved else
                f"{name!r} already holds these weights: its published accuracies are now {new['published']}")
        return name, entry.provenance, what

    def _store_imported(self, fields: dict, net: torch.nn.Module, metrics: dict, model: "TrainedModel", *,
                        replace_old: bool):
        """Keep an imported model under its name (the old entry of that name goes first)."""
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        return self.cached("imported", fields, lambda: (state, {**metrics, "source": model.source,
                                                                "health": model.health.as_dict()}),
                           settings=False, replace=replace_old)

    def _measure(self, net: torch.nn.Module, role: str, dataset: str) -> dict:
        """What the health gate reads, on the first evaluation images."""
        meta = data_mod.info(dataset)
        evaluation = self.dataset(dataset).test.head(health_mod.EVAL_IMAGES)
        with self.accel.autocast():
            return health_mod.measure(net, evaluation.images(), evaluation.y, eps=meta.eps,
                                      adversarial=external.ROLES[role][0] == "adv", batch_size=self.budget.eval_batch,
                                      steps=self.budget.iterations(20))

    def _gated(self, model: "TrainedModel", role: str, dataset: str, path, published: dict | None = None) -> "TrainedModel":
        """``model`` with its health verdict, the reference probe included (``_reference``); an unhealthy
        external model is refused in one line."""
        verdict = health_mod.assess(model.metrics, num_classes=data_mod.info(dataset).num_classes,
                                    budget=self.budget, adversarial=external.ROLES[role][0] == "adv")
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
        the suite's own model of the same role and budget (trained through the pipeline if it is not stored; the
        record names it, and whether it was trained now or loaded, for the terminal and the report's model
        table)."""
        if published and published.get("clean") is not None:
            what = "its published clean accuracy"
            return float(published["clean"]), what, {"what": what}
        training, archs = external.ROLES[role]
        ref = self._trained(training, dataset, arch=archs[0], weight_decay=5e-4, seed=0,
                            label=f"{training.upper()} (reference)")
        what = f"the suite's own {training.upper()} {archs[0]} at the {self.budget.name} budget"
        return float(ref.metrics["clean_accuracy"]), what, {
            "what": what, "key": ref.key, "trained_now": ref.trained_now, "label": ref.label,
            "arch": archs[0], "width": ref.spec.get("width"), "dataset": dataset, "role": training,
            "seed": 0, "budget": self.budget.name, "pgd20_accuracy": ref.metrics.get("pgd20_accuracy"),
            "fgsm_accuracy": ref.metrics.get("fgsm_accuracy"), "eval_images": ref.metrics.get("eval_images"),
            "healthy": None if ref.health is None else ref.health.healthy}
