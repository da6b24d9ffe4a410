"""Local response differences (local_properties paper, Tables 1-5).

For a stage f of the network and an image pair (x, x_adv): Max = max |f(x_adv) - f(x)| and
Total = sum |f(x_adv) - f(x)| over the stage's whole output, per image.

Near the input, Max has a ceiling that no perturbation within the L-inf ball can pass: the first
convolution is linear, so |conv(x_adv) - conv(x)| <= eps / std * (the largest kernel's L1 norm)
(``max_bound``). A Max at that ceiling measures the kernel, not the response (``saturated_share``).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from advclaims.models.layout import StagesMissing, stage_map

SATURATION_RTOL = 1e-2  # a Max within 1% of its ceiling counts as at the ceiling


def stage_module(model: nn.Module, name: str, layers: tuple[str, ...] = ()) -> nn.Module:
    """The submodule standing for stage ``name``: through the model's stage map where it has one, else by name;
    ``StagesMissing`` when there is none (naming every stage in ``layers`` and how to map them)."""
    stages, role = stage_map(model)
    try:
        return model.get_submodule(stages.get(name, name))
    except AttributeError:
        pass
    wanted = ",".join(f"{s}:MODULE" for s in (layers or (name,)))
    slot = role or "ROLE"
    children = [n for n, _ in model.named_children()][:8]
    raise StagesMissing(f"model {type(model).__name__} has no stage {name!r}: this claim reads the stages "
                        f"{', '.join(layers or (name,))}; pass a stage map naming your modules, --repro-stages "
                        f"{slot}={wanted} (or advclaims import ... --stages {wanted}); its top-level modules: "
                        f"{', '.join(children) or 'none'}") from None


def stage_path(model: nn.Module, name: str) -> str:
    """The module path of stage ``name`` in ``model`` (its stage map's, or the name itself)."""
    return stage_map(model)[0].get(name, name)


@contextmanager
def capture(model: torch.nn.Module, layers: tuple[str, ...]):
    """Record the outputs of the named stages (submodules, through the model's stage map) during forward passes."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        module = stage_module(model, name, layers)
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach())))
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def stage_outputs(model: torch.nn.Module, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        with capture(model, layers) as out:
            model(x)
        return dict(out)
    finally:
        model.train(was_training)


@torch.no_grad()
def response_differences(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *,
                         layers: tuple[str, ...], batch_size: int = 500) -> dict[str, dict[str, torch.Tensor]]:
    """Per image, per stage: {"max": (N,), "total": (N,)} of |f(x_adv) - f(x)|."""
    if x.shape != x_adv.shape:
        raise ValueError(f"natural and adversarial batches differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    result = {name: {"max": [], "total": []} for name in layers}
    for i in range(0, len(x), batch_size):
        nat = stage_outputs(model, x[i:i + batch_size], layers)
        adv = stage_outputs(model, x_adv[i:i + batch_size], layers)
        for name in layers:
            diff = (adv[name] - nat[name]).abs().flatten(1)
            result[name]["max"].append(diff.amax(1).cpu())
            result[name]["total"].append(diff.sum(1).cpu())
    return {name: {k: torch.cat(v) for k, v in d.items()} for name, d in result.items()}


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[0] if convs else None


@torch.no_grad()
def max_bound(model: nn.Module, layer: str, eps: float) -> float | None:
    """The ceiling of Max = max |f(x_adv) - f(x)| over every perturbation with |delta| <= eps (pixels),
    where one is known: the first convolution (linear: eps / std_c summed with each kernel's |weights|,
    the largest kernel), and a BatchNorm + ReLU stage right after it (eval-mode BN scales each channel by
    |gamma| / sqrt(var + eps); ReLU is 1-Lipschitz). None for deeper stages or other layouts."""
    first = _first_conv(model)
    if first is None or eps <= 0:
        return None
    name, conv = first
    layer = stage_path(model, layer)
    norm = getattr(model, "normalize", None)
    if norm is None and stage_map(model)[1] is not None:
        return None  # a user's model normalises in its own way: the pixel scale at its first conv is unknown
    std = (norm.std.flatten() if norm is not None and hasattr(norm, "std")
           else torch.ones(conv.in_channels, device=conv.weight.device))
    if conv.groups != 1 or std.numel() != conv.in_channels:
        return None
    per_kernel = (conv.weight.abs().sum((2, 3)) * (eps / std.to(conv.weight)).view(1, -1)).sum(1)  # (out,)
    if layer == name:
        return float(per_kernel.max())
    stage = getattr(model, layer, None) if "." not in layer else None
    if isinstance(stage, nn.Sequential) and len(stage) == 2 and isinstance(stage[0], nn.BatchNorm2d) \
            and isinstance(stage[1], nn.ReLU) and stage[0].num_features == conv.out_channels \
            and _feeds(model, name, layer):
        bn = stage[0]
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        return float((per_kernel * gamma.abs() / (bn.running_var + bn.eps).sqrt()).max())
    return None


def _feeds(model: nn.Module, conv_name: str, layer: str) -> bool:
    """Whether ``layer`` is the stage registered right after the first convolution (the stem's BN + ReLU)."""
    names = [n for n, _ in model.named_children()]
    return conv_name in names and layer in names and names.index(layer) == names.index(conv_name) + 1


def saturated_share(max_values, bound: float | None, *, rtol: float = SATURATION_RTOL) -> float:
    """Share of images whose Max reaches the ceiling (within ``rtol``); 0 where no ceiling is known."""
    if bound is None or bound <= 0:
        return 0.0
    v = np.asarray(max_values, dtype=float)
    return float(np.mean(v >= bound * (1 - rtol)))
