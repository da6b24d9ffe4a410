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

A model's identity is its content: its store key covers a hash of its state dict's tensors after loading
(``state_sha256``) with the code that builds it (the entry point's module file), so other weights behind the
same path or entry point are another model, with adversarial sets of its own. The weights files a model was
read from (the checkpoint, or the files an entry point passed to ``torch.load``) are recorded with their sha256.

A stage map (``parse_stages``: ``conv1:body.0,layer1:body.3,...``) names the modules of a model of the user's
own layout that stand for the stages the claims read (``models.RESNET_STAGES``); ``advclaims.analysis.responses``
looks stages up through it.

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

from advclaims import data as data_mod
from advclaims.checkpoints.keys import file_sha256
from advclaims.models.layout import (NoFeatureSplit, StagesMissing, set_stages, stage_map)  # noqa: F401  (a user's layout)
from advclaims import models as models_mod

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
        """The sha256 of the code or file behind the spec: the checkpoint file, or the entry point's module file."""
        if self.path is not None:
            return file_sha256(self.path)
        file = getattr(_import(self.entry), "__file__", None)
        return file_sha256(Path(file)) if file else hashlib.sha256(self.entry.encode()).hexdigest()


def _import(entry: str):
    """The module of a module:callable entry point; one line (``ModelRefused``) when it is not importable."""
    module_name = entry.split(":")[0]
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ModelRefused(f"entry point {entry}: module {module_name!r} is not importable ({type(err).__name__}: "
                           f"{err}); the suite imports it at run time: put its folder on PYTHONPATH") from None
    except Exception as err:  # the module imports but its own code raises: the user's bug, shown in one line
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelRefused(f"entry point {entry}: importing module {module_name!r} raised {type(err).__name__}: "
                           f"{first}") from None


def state_sha256(model: nn.Module | dict) -> str:
    """A hash of the model's state dict after loading (or of a state dict): every tensor's name, dtype, shape and
    bytes, in name order. Two models with this hash compute the same function (given the same code)."""
    h = hashlib.sha256()
    for name, value in sorted((model if isinstance(model, dict) else model.state_dict()).items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_file(path) -> dict:
    """A weights file as provenance records it: its absolute path and sha256."""
    path = Path(path).expanduser().resolve()
    return {"path": str(path), "sha256": file_sha256(path)}


def parse_spec(text: str, base: str | Path | None = None) -> Source:
    """ARCH:PATH[:raw] when ARCH is a registry name, else module:callable (a dotted module, an identifier).
    A relative PATH resolves against ``base`` (the directory pytest or advclaims was invoked from); the
    Source's text then holds the absolute path."""
    if not isinstance(text, str) or ":" not in text:
        raise ModelRefused(f"model spec {text!r}: use ARCH:PATH (ARCH one of {', '.join(models_mod.names())}) or "
                           f"module:callable")
    head, rest = text.split(":", 1)
    if head in models_mod.names():
        raw = rest.endswith(":raw")
        path = Path(rest[:-4] if raw else rest).expanduser()
        if not path.is_absolute():
            path = Path(base or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise ModelRefused(f"model spec {text!r}: no checkpoint file at {path}")
        return Source("checkpoint", f"{head}:{path}{':raw' if raw else ''}", arch=head, path=path, raw=raw)
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
                           f"{'; '.join(parts)}{hint}; use module:callable for a layout of your own")
    model.load_state_dict(state)
    return model


def build_from_entry_point(source: Source, read: list | None = None) -> nn.Module:
    """The entry point's model; the files it passed to ``torch.load`` are appended to ``read`` (its weights)."""
    module_name, attr = source.entry.split(":")
    try:
        factory = getattr(_import(source.entry), attr)
    except AttributeError as err:
        raise ModelRefused(f"entry point {source.entry}: {type(err).__name__}: {err}") from None
    original = torch.load

    def load(f, *args, **kwargs):  # noted, then the real torch.load
        if read is not None and isinstance(f, (str, Path)) and Path(f).expanduser().is_file():
            read.append(weights_file(f))
        return original(f, *args, **kwargs)

    torch.load = load
    try:
        model = factory()
    except ModelRefused:
        raise
    except Exception as err:  # the user's factory failed: its first line, not a traceback
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelRefused(f"entry point {source.entry} raised {type(err).__name__}: {first}") from None
    finally:
        torch.load = original
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


def build(source: Source, dataset: str, read: list | None = None) -> nn.Module:
    """The external model for ``dataset``, inspected (``ModelRefused`` otherwise), in eval mode on the CPU;
    the weights files it was read from are appended to ``read``."""
    if source.kind == "checkpoint":
        model = build_from_checkpoint(source, dataset)
        if read is not None:
            read.append(weights_file(source.path))
    else:
        model = build_from_entry_point(source, read)
    inspect(model, dataset, source.text)
    return model.eval()


def parse_stages(text: str) -> dict[str, str]:
    """A stage map ``STAGE:MODULE,...`` (e.g. ``conv1:body.0,layer1:body.3``) as {stage: module path};
    STAGE one of the stages the claims read (``models.RESNET_STAGES``). ``ModelRefused`` (one line) otherwise."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        stage, sep, module = part.partition(":")
        if not sep or not stage or not re.fullmatch(r"\w+(\.\w+)*", module or ""):
            raise ModelRefused(f"stage map {text!r}: {part!r} is not STAGE:MODULE (e.g. conv1:body.0, MODULE a "
                               f"module path of your model as named_modules() gives it)")
        if stage not in models_mod.RESNET_STAGES:
            raise ModelRefused(f"stage map {text!r}: {stage!r} is not a stage the claims read "
                               f"({', '.join(models_mod.RESNET_STAGES)})")
        if stage in out:
            raise ModelRefused(f"stage map {text!r}: stage {stage!r} is mapped twice")
        out[stage] = module
    if not out:
        raise ModelRefused(f"stage map {text!r} is empty: give STAGE:MODULE pairs, e.g. conv1:body.0,layer1:body.3")
    return out


def check_stages(model: nn.Module, stages: dict[str, str], what: str) -> None:
    """Refuse, in one line, a stage map naming modules the model does not have."""
    have = dict(model.named_modules())
    absent = [f"{s}:{m}" for s, m in stages.items() if m not in have]
    if absent:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ModelRefused(f"stage map of {what}: {', '.join(absent)} name no module of {type(model).__name__} "
                           f"(its modules: {', '.join(names)}{' ...' if len(have) > 13 else ''})")
