"""Models from outside the suite: the claims run on a user's own checkpoint instead of training one.

A model comes in two ways (``--repro-model ROLE=SPEC``, ``advclaims import SPEC``):

- ``ARCH:PATH``: a state dict, or a checkpoint dict holding one (under ``state_dict``, ``model``, ``net`` or
  ``model_state_dict``), of an architecture in the registry. Key layouts of common model zoos are mapped onto
  the registry's: DataParallel's ``module.`` prefix; ResNet-18 with ``bn1``/``linear`` (kuangliu's
  pytorch-cifar, and the robustness zoos that copied it); PreAct ResNet-18 with ``shortcut.0``; WRN-28-10 with
  ``block1.layer.0`` / ``convShortcut`` / a final ``bn1`` (RobustBench, TRADES). The width is read off the
  weights. A checkpoint without the registry's normalisation buffers gets the dataset's mean and std
  (``ARCH:PATH:raw`` for a model trained on unnormalised [0, 1] pixels).
- ``module:callable``: a Python entry point returning an ``nn.Module`` that takes [0, 1] pixels, with its own
  normalisation inside.

Every model is inspected before use, each refusal one line (``ModelRefused``): a file that is not
``weights_only`` loadable, state dict keys that do not fit (which ones), a wrong input size or channel count,
a wrong class count, a model that is not eval-safe (outputs that vary between two eval forwards, or buffers a
forward changes). Then the health gate runs on [0, 1] data: a model expecting other pixels fails it there.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import data as data_mod
from . import models as models_mod

ROLES = {  # role -> (training role, the architectures the fixtures ask for in that role)
    "std": ("std", ("resnet18",)),
    "adv": ("adv", ("resnet18",)),
    "ib_vgg16": ("adv", ("vgg16_bn",)),
    "ib_wrn28_10": ("adv", ("wrn28_10",)),
    "curvature": ("std", ("lenet", "nin")),
}
_NESTED = ("state_dict", "model_state_dict", "model", "net")


class ModelRefused(ValueError):
    """An external model cannot be used; the message is one line saying why and what to do."""


def role_of(role: str, arch: str) -> str | None:
    """The --repro-model role a fixture's (training role, architecture) request fills, if any."""
    for name, (training, archs) in ROLES.items():
        if training == role and arch in archs:
            return name
    return None


@dataclass(frozen=True)
class Source:
    """Where an external model comes from: ``kind`` "checkpoint" (arch, path, raw) or "entry_point"."""

    kind: str
    text: str                    # the SPEC as given
    arch: str | None = None
    path: Path | None = None
    entry: str | None = None
    raw: bool = False            # a checkpoint trained on unnormalised pixels

    def sha256(self) -> str:
        if self.path is not None:
            return _sha256(self.path)
        module = importlib.import_module(self.entry.split(":")[0])
        file = getattr(module, "__file__", None)
        return _sha256(Path(file)) if file else hashlib.sha256(self.entry.encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_spec(text: str) -> Source:
    """ARCH:PATH[:raw] when ARCH is a registry name, else module:callable (a dotted module, an identifier)."""
    if not isinstance(text, str) or ":" not in text:
        raise ModelRefused(f"model spec {text!r}: use ARCH:PATH (ARCH one of {', '.join(models_mod.names())}) or "
                           f"module:callable")
    head, rest = text.split(":", 1)
    if head in models_mod.names():
        raw = rest.endswith(":raw")
        path = Path(rest[:-4] if raw else rest).expanduser()
        if not path.is_file():
            raise ModelRefused(f"model spec {text!r}: no checkpoint file at {path}")
        return Source("checkpoint", text, arch=head, path=path, raw=raw)
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        return Source("entry_point", text, entry=text)
    raise ModelRefused(f"model spec {text!r}: {head!r} is not an architecture of the registry "
                       f"({', '.join(models_mod.names())}) and {text!r} is not a module:callable entry point")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file, loaded with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; the file cannot be trusted as weights
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise ModelRefused(f"{path} is not weights_only loadable ({type(err).__name__}: {first}); it holds code or "
                           f"custom classes. Re-save the weights alone: torch.save(model.state_dict(), path)") from None
    for key in _NESTED:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelRefused(f"{path} holds no state dict (a dict of tensors, possibly under one of {_NESTED})")
    return obj


def zoo_keys(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Map the key layouts of common model zoos onto the registry's names for ``arch``."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^(module\.|model\.)+", "", key)  # DataParallel's and wrappers' prefixes
        if arch == "resnet18":
            key = re.sub(r"^bn1\.", "layer0.0.", key)
            key = re.sub(r"^linear\.", "fc.", key)
        elif arch == "preact_resnet18":
            key = re.sub(r"\.shortcut\.0\.", ".shortcut.", key)
            key = re.sub(r"^linear\.", "fc.", key)
        elif arch == "wrn28_10":
            key = re.sub(r"^block(\d)\.layer\.", r"layer\1.", key)
            key = key.replace(".convShortcut.", ".shortcut.")
            key = re.sub(r"^bn1\.", "bn.", key)
        out[key] = value
    return out


def width_of(arch: str, state: dict[str, torch.Tensor]) -> int:
    """The registry width of ``arch`` that these weights have: WRN's k, otherwise the first conv's channels."""
    if arch == "wrn28_10" and "layer1.0.conv1.weight" in state:
        return int(state["layer1.0.conv1.weight"].shape[0]) // 16
    first = next((v for k, v in state.items() if k.endswith("weight") and v.dim() == 4), None)
    return int(first.shape[0]) if first is not None else models_mod.DEFAULT_WIDTH[arch]


def build_from_checkpoint(source: Source, dataset: str) -> nn.Module:
    meta = data_mod.info(dataset)
    state = zoo_keys(load_state_dict(source.path), source.arch)
    width = width_of(source.arch, state)
    mean, std = ((0.0,) * meta.channels, (1.0,) * meta.channels) if source.raw else (meta.mean, meta.std)
    try:
        model = models_mod.build(source.arch, in_channels=meta.channels, num_classes=meta.num_classes, width=width,
                                 mean=mean, std=std, input_size=meta.size)
    except ValueError as err:
        raise ModelRefused(f"{source.text}: {err}") from None
    wanted = model.state_dict()
    if "normalize.mean" not in state:  # the zoo normalises outside the model: ours goes inside
        state = {**state, "normalize.mean": wanted["normalize.mean"], "normalize.std": wanted["normalize.std"]}
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    wrong = sorted(k for k in set(wanted) & set(state) if wanted[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        hint = (" (a class-count mismatch: the dataset has {} classes)".format(meta.num_classes)
                if any(k.startswith(("fc.", "classifier.")) for k in wrong) else "")
        raise ModelRefused(f"{source.path}: its keys do not fit {source.arch} (width {width}) on {dataset}: "
                           f"{'; '.join(parts)}{hint}")
    model.load_state_dict(state)
    return model


def build_from_entry_point(source: Source) -> nn.Module:
    module_name, attr = source.entry.split(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ModelRefused(f"entry point {source.entry}: {type(err).__name__}: {err}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelRefused(f"entry point {source.entry} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def inspect(model: nn.Module, dataset: str, what: str) -> None:
    """Refuse, in one line, a model of the wrong input or class count, or one whose eval forward is not safe."""
    meta = data_mod.info(dataset)
    model.eval()
    x = torch.rand(2, meta.channels, meta.size, meta.size, generator=torch.Generator().manual_seed(0))
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            first, second = model(x), model(x)
    except Exception as err:  # any failure on the dataset's input shape is the same refusal
        first_line = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelRefused(f"{what} does not take {dataset}'s images (N, {meta.channels}, {meta.size}, {meta.size}) "
                           f"in [0, 1]: {type(err).__name__}: {first_line}") from None
    if not isinstance(first, torch.Tensor) or first.shape != (2, meta.num_classes):
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        raise ModelRefused(f"{what} returns {shape} for a batch of 2 {dataset} images; the suite needs logits of "
                           f"shape (2, {meta.num_classes}): {dataset} has {meta.num_classes} classes")
    changed = [k for k, v in model.state_dict().items() if k in buffers and not torch.equal(v, buffers[k])]
    if changed or not torch.equal(first, second):
        why = f"its forward changes {', '.join(changed[:3])}" if changed else "two eval forwards of one batch differ"
        raise ModelRefused(f"{what} is not eval-safe ({why}): the suite needs a deterministic model in eval mode "
                           f"(no dropout or noise at test time, no statistics updated by a forward)")
    if not all(torch.isfinite(first).flatten()):
        raise ModelRefused(f"{what} returns NaN or inf logits on [0, 1] images")


def build(source: Source, dataset: str) -> nn.Module:
    """The external model for ``dataset``, inspected (``ModelRefused`` otherwise), in eval mode on the CPU."""
    model = build_from_checkpoint(source, dataset) if source.kind == "checkpoint" else build_from_entry_point(source)
    inspect(model, dataset, source.text)
    return model.eval()
