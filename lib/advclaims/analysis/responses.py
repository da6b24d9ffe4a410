"""Local response differences (local_properties paper, Tables 1-5).

For a stage f of the network and an image pair (x, x_adv): Max = max |f(x_adv) - f(x)| and
Total = sum |f(x_adv) - f(x)| over the stage's whole output, per image.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def capture(model: torch.nn.Module, layers: tuple[str, ...]):
    """Record the outputs of the named submodules during forward passes."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"model {type(model).__name__} has no stage {name!r}") from None
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
