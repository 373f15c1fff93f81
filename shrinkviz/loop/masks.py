"""Pruning masks that cost nothing in the forward pass.

A mask is a boolean buffer registered on the module that owns the weight: ``conv.weight_mask`` for
``conv.weight`` (``conv.bias_mask`` for a pruned bias). The forward pass never reads it; masked weights
are simply zero. :class:`MaskCallback` keeps them zero during training: it zeroes masked gradients after
``backward`` and re-zeroes masked weights after every optimizer step (so momentum, weight decay and Adam
cannot revive them). That enforcement is done by process-wide optimizer hooks
(:mod:`shrinkviz.loop.enforce`), so it holds in any training loop with any ``torch.optim`` optimizer, not
only in :func:`shrinkviz.loop.train.fit`. Weights written outside an optimizer step (``load_state_dict``,
``param.data[...] = ...``) are not re-zeroed silently: :func:`check_masks` counts them and the verbs
refuse such a model, naming :func:`apply_masks` (re-zero) and :func:`remove_masks` (drop the masks). ShrinkBench instead multiplied weights by masks in
every forward, which made its masked model ~1.5x slower.

Names: :func:`get_masks` returns ``{"<module>.<param>": BoolTensor}`` with the qualified parameter name
(``"features.1.body.0.conv.weight"``); the buffer in ``state_dict`` is ``"<module>.<param>_mask"``.
Masks follow the module, so a module *swap* (eager fusion, ``prepare_qat``, ``convert``) drops them:
``masks = get_masks(model)`` before the swap, ``set_masks(new_model, masks)`` after. :func:`set_masks`
resolves a name whose module became a fused ``Sequential`` (``conv`` -> ``conv.0`` after
``fuse_modules``) by itself; fused QAT modules (``ConvBnReLU2d`` after ``prepare_qat``) keep the
``conv.weight`` name and need no mapping. INT8 modules hold packed weights that cannot carry masks, but
quantization maps 0 to 0, so their zeros stay.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> _ = set_masks(net, {"0.weight": torch.rand(3, 4) > 2})   # all False: prune everything
    >>> int(net[0].weight.count_nonzero()), sorted(get_masks(net))
    (0, ['0.weight'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from shrinkviz.core.layers import layer_kind, weight_table
from shrinkviz.loop.callbacks import Callback
from shrinkviz.loop.enforce import MASK_SUFFIX, register_module, unregister_module

if TYPE_CHECKING:
    import pandas as pd


class MaskError(ValueError):
    """Masked weights are nonzero: the model's weights were changed outside an optimizer step."""


def classifier_layers(model: nn.Module) -> set[str]:
    """Qualified names of the classifier's conv / linear layers: everything inside ``model.classifier``
    for registry models, else the last ``nn.Linear`` of the module order.

    Example:
        >>> from shrinkviz.models import create_model
        >>> classifier_layers(create_model("tiny_mlp"))
        {'classifier'}
    """
    head = getattr(model, "classifier", None)
    names = {name for name, module in model.named_modules() if layer_kind(module) is not None}
    if isinstance(head, nn.Module):
        for prefix, module in model.named_modules():
            if module is head:
                return {n for n in names if n == prefix or n.startswith(prefix + ".")}
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return {linears[-1]} if linears else set()


def prunable_parameters(
    model: nn.Module, *, include_classifier: bool = False, prune_bias: bool = False
) -> list[tuple[str, nn.Module, str]]:
    """``(qualified parameter name, owning module, attribute)`` of every prunable tensor, in module order.

    Prunable: the weights (and with ``prune_bias`` the biases) of Conv2d and Linear layers, float or
    QAT; the classifier only with ``include_classifier``. BatchNorm is never pruned; INT8 layers cannot be.

    Example:
        >>> from shrinkviz.models import create_model
        >>> [name for name, _, _ in prunable_parameters(create_model("tiny_mlp"))]
        ['features.1.linear.weight']
    """
    excluded = set() if include_classifier else classifier_layers(model)
    found = []
    for name, module in model.named_modules():
        if layer_kind(module) is None or name in excluded:
            continue
        for attr in ("weight", "bias") if prune_bias else ("weight",):
            if isinstance(module._parameters.get(attr), nn.Parameter):
                found.append((f"{name}.{attr}" if name else attr, module, attr))
    return found


def _masked(model: nn.Module) -> list[tuple[str, nn.Module, str, torch.Tensor]]:
    found = []
    for name, module in model.named_modules():
        for buffer_name, mask in module._buffers.items():
            attr = buffer_name[: -len(MASK_SUFFIX)]
            if mask is not None and buffer_name.endswith(MASK_SUFFIX) and attr in module._parameters:
                found.append((f"{name}.{attr}" if name else attr, module, attr, mask))
    return found


def has_masks(model: nn.Module) -> bool:
    """True when some parameter of ``model`` carries a pruning mask."""
    return bool(_masked(model))


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{qualified parameter name: bool mask}`` (True = kept) for every masked parameter (clones)."""
    return {name: mask.detach().clone() for name, _, _, mask in _masked(model)}


def masks_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks saved in a masked model's state_dict, by parameter name: to reload a pruned checkpoint
    into a fresh model, ``set_masks(model, masks_from_state_dict(sd))`` then ``model.load_state_dict(sd)``.

    Example:
        >>> sd = {"fc.weight": torch.ones(1), "fc.weight_mask": torch.ones(1, dtype=torch.bool)}
        >>> masks_from_state_dict(sd)
        {'fc.weight': tensor([True])}
    """
    return {
        key[: -len(MASK_SUFFIX)]: value
        for key, value in state_dict.items()
        if key.endswith(MASK_SUFFIX) and key[: -len(MASK_SUFFIX)] in state_dict
    }


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attr = name.rpartition(".")
    candidates = [path, f"{path}.0" if path else "0"]
    for candidate in candidates:
        try:
            module = model.get_submodule(candidate) if candidate else model
        except AttributeError:
            continue
        if isinstance(module._parameters.get(attr), nn.Parameter):
            return module, attr
    raise ValueError(
        f"set_masks: {name!r} is not a parameter of the model (also tried {candidates[1]!r} for "
        "a fused Sequential); masks name parameters as '<module>.<param>', "
        "e.g. 'features.0.conv.weight'"
    )


def set_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Attach masks (True = kept) and zero the masked weights, in place; returns ``model``.

    Every name and shape is checked before anything changes. Existing masks of other parameters stay.

    Args:
        model: the model (possibly fused or QAT-prepared; see the module docstring for name mapping).
        masks: ``{"<module>.<param>": mask}``, masks of the parameter's shape (bool or 0/1).

    Raises:
        ValueError: unknown parameter name or wrong shape (nothing is modified).

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> _ = set_masks(layer, {"weight": torch.tensor([[1, 0], [0, 1]])})
        >>> layer.weight_mask.dtype
        torch.bool
    """
    resolved = []
    for name, mask in masks.items():
        module, attr = _resolve(model, name)
        param = module._parameters[attr]
        mask = torch.as_tensor(mask)
        if tuple(mask.shape) != tuple(param.shape):
            raise ValueError(
                f"set_masks: mask of {name!r} has shape {tuple(mask.shape)}, the parameter "
                f"{tuple(param.shape)}"
            )
        resolved.append((module, attr, mask.to(device=param.device, dtype=torch.bool)))
    with torch.no_grad():
        for module, attr, mask in resolved:
            module.register_buffer(attr + MASK_SUFFIX, mask.clone())
            module._parameters[attr].masked_fill_(~mask, 0.0)
            register_module(module)
    return model


def apply_masks(model: nn.Module) -> nn.Module:
    """Zero every masked weight again (e.g. after loading dense weights into a masked model) and make sure
    the optimizer hooks enforce every mask (e.g. after a parameter was replaced); returns model."""
    with torch.no_grad():
        for _, module, attr, mask in _masked(model):
            module._parameters[attr].masked_fill_(~mask, 0.0)
            register_module(module)
    return model


def revived(model: nn.Module) -> dict[str, int]:
    """``{parameter name: count}`` of masked-out weights that are nonzero (empty when all masks hold).

    Example:
        >>> layer = set_masks(nn.Linear(2, 2), {"weight": torch.eye(2, dtype=torch.bool)})
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(1.0)
        >>> revived(layer)
        {'weight': 2}
    """
    found = {}
    for name, module, attr, mask in _masked(model):
        count = int(torch.count_nonzero(module._parameters[attr].detach()[~mask]))
        if count:
            found[name] = count
    return found


def revived_message(model: nn.Module, what: str) -> str | None:
    """The one-line explanation of :func:`revived` weights for ``what`` (a verb), or None when none."""
    found = revived(model)
    if not found:
        return None
    total = sum(int((~mask).sum()) for _, _, _, mask in _masked(model))
    first = next(iter(found))
    return (
        f"{what}: {sum(found.values())} of {total} pruned weights are nonzero in {len(found)} masked "
        f"tensor(s) (first: {first!r}), so the model's weights were changed outside an optimizer step; "
        "call shrinkviz.loop.masks.apply_masks(model) to re-zero them, or "
        "shrinkviz.loop.masks.remove_masks(model) to drop the masks"
    )


def check_masks(model: nn.Module, what: str) -> None:
    """Raise :class:`MaskError` when masked weights of ``model`` are nonzero (see :func:`revived`).

    Example:
        >>> layer = set_masks(nn.Linear(2, 2), {"weight": torch.eye(2, dtype=torch.bool)})
        >>> check_masks(layer, "finetune")  # masks hold: nothing to say
    """
    message = revived_message(model, what)
    if message:
        raise MaskError(message)


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake masks in for export: zero masked weights (as +0.0) and delete the mask buffers, in place.

    The result is a plain model with the same state_dict keys as an unpruned one and no overhead.

    Example:
        >>> from torch import nn
        >>> layer = set_masks(nn.Linear(2, 2), {"weight": torch.eye(2, dtype=torch.bool)})
        >>> sorted(remove_masks(layer).state_dict())
        ['bias', 'weight']
    """
    apply_masks(model)
    for _, module, attr, _ in _masked(model):
        del module._buffers[attr + MASK_SUFFIX]
        unregister_module(module)
    return model


def masked_sparsity(model: nn.Module) -> float:
    """Fraction of the elements of masked parameters that are zero (NaN without masks)."""
    zeros = total = 0
    for _, module, attr, _ in _masked(model):
        param = module._parameters[attr]
        total += param.numel()
        zeros += param.numel() - int(torch.count_nonzero(param))
    return zeros / total if total else float("nan")


def mask_table(model: nn.Module) -> pd.DataFrame:
    """One row per conv / linear layer: layer, kind, shape, params, nonzero, sparsity (weights).

    Example:
        >>> from shrinkviz.models import create_model
        >>> mask_table(create_model("tiny_mlp")).columns.tolist()
        ['layer', 'kind', 'shape', 'params', 'nonzero', 'sparsity']
    """
    return weight_table(model)


class MaskCallback(Callback):
    """Keeps masked parameters at exactly zero during :func:`shrinkviz.loop.train.fit`.

    The zeroing itself (masked gradients before every optimizer step, masked weights after it) is done by
    the optimizer hooks of :mod:`shrinkviz.loop.enforce`, which also cover training code outside ``fit``.
    This callback refuses a model whose masked weights are already nonzero (:func:`check_masks`), makes
    sure every mask is registered with the hooks, and writes the ``sparsity`` history column. ``fit`` adds
    one automatically for masked models; pass one explicitly only to subclass it.
    """

    def refresh(self, model: nn.Module) -> None:
        """Register the model's current masks with the optimizer hooks (call after masks change)."""
        for _, module, _, _ in _masked(model):
            register_module(module)

    def fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        check_masks(model, "fit")
        self.refresh(model)

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        self.refresh(model)

    def epoch_end(self, model: nn.Module, epoch: int, row: dict[str, Any]) -> None:
        row["sparsity"] = masked_sparsity(model)


def mask_callbacks(model: nn.Module, callbacks: Sequence[Callback] = ()) -> list[Callback]:
    """What :func:`shrinkviz.loop.train.fit` prepends: a :class:`MaskCallback` when ``model`` carries masks and
    no callback in ``callbacks`` already enforces them (a :class:`MaskCallback` subclass)."""
    if any(isinstance(cb, MaskCallback) for cb in callbacks) or not has_masks(model):
        return []
    return [MaskCallback()]
