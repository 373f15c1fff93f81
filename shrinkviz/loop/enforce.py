"""Pruning masks enforced at the parameter level, for every optimizer in any training code.

Two process-wide optimizer hooks (``torch.optim.optimizer.register_optimizer_step_pre_hook`` and
``..._post_hook``) run around every ``optimizer.step()`` of every ``torch.optim.Optimizer``: before the
step they zero the gradients of masked parameters (so momentum, Nesterov, weight decay and Adam moments
never accumulate anything for them), after it they set the masked weights to exactly ``+0.0``. The forward
pass is untouched: a masked model is an ordinary dense model whose pruned weights are zero.

Both are multiplications by the mask as a 0/1 tensor of the parameter's dtype (cached), not
``masked_fill_`` with the boolean mask: on the CPU ``masked_fill_`` of MnistNet's 500x800 layer took 1.47 ms
against 0.034 ms for the product (one thread, AMD EPYC), 8% of a Fashion-MNIST finetuning epoch. The
result is the same for finite values (``+ 0.0`` after the product turns a revived negative weight's
``-0.0`` into ``+0.0``); a NaN or infinite gradient at a masked position stays NaN, which only happens in a
training that has diverged (``fit`` stops at the first non-finite epoch loss).

The hooks find masks through a table keyed by parameter identity (weak references, so nothing is kept
alive). A small guard object stored on each masked module re-registers its parameters after
``copy.deepcopy`` or pickling (``torch.save(model)``, shipping to a worker), which create new parameter
objects. :func:`shrinkviz.loop.masks.remove_masks` unregisters.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from shrinkviz.loop.masks import set_masks
    >>> layer = set_masks(nn.Linear(2, 2), {"weight": torch.eye(2, dtype=torch.bool)})
    >>> opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    >>> for _ in range(3):
    ...     opt.zero_grad(); layer(torch.randn(4, 2)).sum().backward(); opt.step()
    >>> int(layer.weight.count_nonzero())
    2
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import nn

MASK_SUFFIX = "_mask"
GUARD_ATTR = "_sv_mask_guard"

# id(param) -> [weakref(param), weakref(module), attr, cached mask, cached 0/1 keep tensor]
_ENTRIES: dict[int, list[Any]] = {}
_PENDING: list[weakref.ref[nn.Module]] = []
_HANDLES: list[Any] = []


class MaskGuard:
    """Lives in a masked module's ``__dict__``; on deepcopy / unpickling it queues the new module so that
    its (new) parameters are registered before the next optimizer step."""

    __slots__ = ("__weakref__", "module")

    def __init__(self, module: nn.Module) -> None:
        self.module = weakref.ref(module)
        _PENDING.append(self.module)
        install()

    def __deepcopy__(self, memo: dict[int, Any]) -> MaskGuard:
        return MaskGuard(copy.deepcopy(self.module(), memo))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (MaskGuard, (self.module(),))

    def __repr__(self) -> str:
        return "MaskGuard()"


def _forget(key: int) -> Any:
    def drop(ref: weakref.ref) -> None:
        entry = _ENTRIES.get(key)
        if entry is not None and entry[0] is ref:
            del _ENTRIES[key]

    return drop


def register_module(module: nn.Module) -> None:
    """Register every masked parameter of ``module`` itself (not its children) with the hooks."""
    guard = module.__dict__.get(GUARD_ATTR)
    if guard is None or guard.module() is not module:  # absent, or copied over from a swapped module
        module.__dict__[GUARD_ATTR] = MaskGuard(module)
    for buffer_name, mask in module._buffers.items():
        attr = buffer_name[: -len(MASK_SUFFIX)]
        param = module._parameters.get(attr)
        if mask is None or not buffer_name.endswith(MASK_SUFFIX) or param is None:
            continue
        key = id(param)
        entry = _ENTRIES.get(key)
        if entry is None or entry[0]() is not param or entry[1]() is not module:
            _ENTRIES[key] = [weakref.ref(param, _forget(key)), weakref.ref(module), attr, None, None]
    install()


def unregister_module(module: nn.Module) -> None:
    """Drop ``module``'s parameters from the hooks and remove its guard."""
    module.__dict__.pop(GUARD_ATTR, None)
    for param in module._parameters.values():
        if param is not None:
            entry = _ENTRIES.get(id(param))
            if entry is not None and entry[0]() is param:
                del _ENTRIES[id(param)]


def _flush() -> None:
    while _PENDING:
        module = _PENDING.pop()()
        if module is not None and GUARD_ATTR in module.__dict__:
            register_module(module)


def _keep(entry: list[Any], param: torch.Tensor) -> torch.Tensor | None:
    """The mask of a live entry as 1 (kept) / 0 in ``param``'s dtype and device (cached per mask tensor),
    or None when the mask is gone."""
    module = entry[1]()
    mask = module._buffers.get(entry[2] + MASK_SUFFIX) if module is not None else None
    if mask is None or module._parameters.get(entry[2]) is not param:
        return None
    cached = entry[4]
    if entry[3] is not mask or cached.device != param.device or cached.dtype != param.dtype:
        entry[3], entry[4] = mask, mask.to(device=param.device, dtype=torch.bool).to(param.dtype)
    return entry[4]


def _masked_params(optimizer: torch.optim.Optimizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    _flush()
    if not _ENTRIES:
        return []
    found = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            entry = _ENTRIES.get(id(param))
            if entry is not None and entry[0]() is param:
                keep = _keep(entry, param)
                if keep is not None:
                    found.append((param, keep))
    return found


@torch.no_grad()
def _pre_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    for param, keep in _masked_params(optimizer):
        if param.grad is not None:
            param.grad.mul_(keep)


@torch.no_grad()
def _post_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    for param, keep in _masked_params(optimizer):
        param.mul_(keep).add_(0.0)


def install() -> None:
    """Register the two global optimizer hooks (once per process; idempotent)."""
    if not _HANDLES:
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        _HANDLES.append(register_optimizer_step_pre_hook(_pre_step))
        _HANDLES.append(register_optimizer_step_post_hook(_post_step))


def registered(param: torch.Tensor) -> bool:
    """Whether the hooks currently enforce a mask on ``param``.

    Example:
        >>> registered(nn.Linear(1, 1).weight)
        False
    """
    _flush()
    entry = _ENTRIES.get(id(param))
    return entry is not None and entry[0]() is param and _keep(entry, param) is not None
