"""The attacks' fast forward: the model's logits with less work per attack step (docs/performance.md).

Two rewrites, each exact in real arithmetic, so logits differ from the model's by float rounding only:
  * every eval-mode BatchNorm2d that reads a Conv2d's output, and is its only reader, is folded into
    that convolution (w' = w * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps)): the
    BatchNorm's forward and backward disappear. The folding lives on a private copy of the model that
    shares every other tensor with it; the folded weights are recomputed whenever a parameter or buffer
    of the model is written (version counter or storage changed), and the copy is rebuilt when a
    module, a parameter object or a training flag changes.
  * on the CPU, a convolutional model gets channels_last inputs: mkldnn's NHWC kernels skip the layout
    reorders of NCHW (1.7x per step on the smoke ResNet-18, docs/performance.md).
A model with hooks, with a module in training mode, or wrapped (DataParallel, DDP, torch.compile) is
used as it is: its hooks would see rewritten activations, its dropout would draw random numbers in
the check below, and a wrapper's forward does more than its modules. Once per structure, the
rewritten model's logits are compared with the model's on the attack's first images; a mismatch or an
error (e.g. a ``.view`` that channels_last breaks) keeps the plain model.
"""

from __future__ import annotations

import copy
import weakref
from collections import Counter

import torch
from torch import nn
from torch.nn.utils import parametrize

FAST_RTOL = 1e-4  # max |fast - model| / max(1, max |model logit|) for 32- and 64-bit floats
FAST_RTOL_16BIT = 3e-2  # for half and bfloat16 logits


class FastForward(nn.Module):
    """``body`` (the model or its BatchNorm-folded copy) fed inputs in ``memory_format``."""

    def __init__(self, body: nn.Module, memory_format: torch.memory_format):
        super().__init__()
        self.body = body
        self.memory_format = memory_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.contiguous(memory_format=self.memory_format))


class _Entry:
    """A model's cached rewrite. Holds no reference to the model itself, so the cache never keeps it alive."""

    def __init__(self, structure: tuple, folded: nn.Module | None = None,
                 layout: torch.memory_format = torch.preserve_format,
                 pairs: list[tuple[nn.Conv2d, nn.Conv2d, nn.BatchNorm2d]] = ()):
        self.structure = structure
        self.folded = folded  # the BatchNorm-folded copy, or None to run the model itself
        self.layout = layout
        self.pairs = list(pairs)  # (conv in the copy, conv in the model, its BatchNorm in the model)
        self.versions: tuple | None = None


_FAST: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def fast_model(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A module giving ``model``'s logits up to float rounding, faster; call it inside ``frozen(model)``.

    ``x`` is the batch about to be attacked: its first images check a new rewrite. Returns ``model``
    itself when no rewrite applies.
    """
    structure = _structure_key(model)
    entry = _FAST.get(model)
    if entry is None or entry.structure != structure:
        entry = _build(model, x[:4].detach(), structure) if x.shape[0] else _Entry(structure)
        _FAST[model] = entry
    versions = _versions_key(model)
    if entry.versions != versions:
        for conv_copy, conv, bn in entry.pairs:
            _fold_into(conv_copy, conv, bn)
        entry.versions = versions
    if entry.folded is None and entry.layout == torch.preserve_format:
        return model
    return FastForward(model if entry.folded is None else entry.folded, entry.layout)


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _global_hooks() -> bool:
    hooks = nn.modules.module
    return bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
                or hooks._global_backward_pre_hooks)


def _structure_key(model: nn.Module) -> tuple:
    """Changes when a module, its training flag or hooks, or a parameter/buffer object is replaced."""
    modules = tuple((id(m), m.training, _has_hooks(m)) for m in model.modules())
    return modules, tuple(id(t) for t in _tensors(model)), _global_hooks()


def _versions_key(model: nn.Module) -> tuple:
    """Changes when any parameter or buffer is written in place or given new storage."""
    return tuple((t._version, t.data_ptr()) for t in _tensors(model))


def _build(model: nn.Module, sample: torch.Tensor, structure: tuple) -> _Entry:
    """Fold what can be folded, pick the input layout, and keep the result only if its logits agree."""
    modules, _, global_hooks = structure
    if global_hooks or any(training or hooked for _, training, hooked in modules) or _is_wrapper(model):
        return _Entry(structure)
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    layout = torch.channels_last if has_conv and sample.device.type == "cpu" else torch.preserve_format
    names = _foldable_pairs(model, sample)
    folded = copy.deepcopy(model, memo={id(t): t for t in _tensors(model)}) if names else None
    pairs = []
    for conv_name, bn_name in names:
        pairs.append((folded.get_submodule(conv_name), model.get_submodule(conv_name), model.get_submodule(bn_name)))
        _fold_into(*pairs[-1])
        parent, _, leaf = bn_name.rpartition(".")
        setattr(folded.get_submodule(parent), leaf, nn.Identity())
    entry = _Entry(structure, folded, layout, pairs)
    if folded is None and layout == torch.preserve_format:
        return entry
    fast = FastForward(model if folded is None else folded, layout)
    return entry if _agrees(model, fast, sample) else _Entry(structure)


def _is_wrapper(model: nn.Module) -> bool:
    """(Distributed)DataParallel, or torch.compile anywhere inside (an OptimizedModule has ``_orig_mod``,
    e.g. accel.CompiledForward's): their forward is more than their modules', and tracing a compiled
    module with hooks would recompile it."""
    return (isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
            or any(hasattr(m, "_orig_mod") for m in model.modules()))


def _foldable_pairs(model: nn.Module, sample: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, BatchNorm name): an eval BatchNorm2d whose input is a Conv2d's output and its only use.

    One traced forward on ``sample`` records each module's autograd node; a conv or BatchNorm called
    more than once (a shared module) is left alone, as is a conv whose output feeds any other operation.
    Non-differentiable uses of a conv output (e.g. a mask ``out > 0``) leave no trace in the graph: the
    logits check of ``_build`` is what catches those.
    """
    convs = {name: m for name, m in model.named_modules()
             if type(m) is nn.Conv2d and not parametrize.is_parametrized(m)}
    bns = {name: m for name, m in model.named_modules()
           if type(m) is nn.BatchNorm2d and m.running_mean is not None}
    if not convs or not bns:
        return []
    conv_nodes: dict[str, list] = {name: [] for name in convs}
    bn_inputs: dict[str, list] = {name: [] for name in bns}
    handles = [m.register_forward_hook(lambda mod, args, out, seen=conv_nodes[name]: seen.append(out.grad_fn))
               for name, m in convs.items()]
    handles += [m.register_forward_hook(lambda mod, args, out, seen=bn_inputs[name]: seen.append(args[0].grad_fn))
                for name, m in bns.items()]
    try:
        with torch.enable_grad():
            logits = model(sample.detach().requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.grad_fn is None:
        return []
    uses = _use_counts(logits.grad_fn)
    conv_of_node = {nodes[0]: name for name, nodes in conv_nodes.items() if len(nodes) == 1 and nodes[0] is not None}
    return [(conv_of_node[nodes[0]], bn_name) for bn_name, nodes in bn_inputs.items()
            if len(nodes) == 1 and nodes[0] in conv_of_node and uses[nodes[0]] == 1]


def _use_counts(root) -> Counter:
    """For each autograd node reachable from ``root``, how many edges of the graph point at it."""
    counts: Counter = Counter()
    seen, stack = {root}, [root]
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is None:
                continue
            counts[child] += 1
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return counts


def _fold_into(conv_copy: nn.Conv2d, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Give ``conv_copy`` the weights of ``bn(conv(.))``, computed in float64 and stored like conv's weight."""
    with torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() if conv.bias is None else conv.bias.double() - bn.running_mean.double()
        shift = shift * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)  # keeps the weight's memory format
        conv_copy.weight = nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
        conv_copy.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)


def _agrees(model: nn.Module, fast: nn.Module, sample: torch.Tensor) -> bool:
    """The fast forward runs and its logits match the model's on ``sample`` within the FAST_RTOL tolerances."""
    with torch.no_grad():
        reference = model(sample)
        try:
            logits = fast(sample)
        except RuntimeError:
            return False
    if not isinstance(reference, torch.Tensor) or logits.shape != reference.shape:
        return False
    rtol = FAST_RTOL if reference.element_size() >= 4 else FAST_RTOL_16BIT
    scale = reference.abs().max().clamp_min(1.0)
    return bool(((logits - reference).abs().max() <= rtol * scale).item())
