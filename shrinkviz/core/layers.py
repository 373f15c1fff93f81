"""What a conv / linear layer is, across float, QAT, fused and INT8 forms, and counting its weights.

Everything that walks a model's layers (pruning, masks, counts, export) asks these functions, so "is this
a prunable layer?" and "what is its weight?" have one answer.

Example:
    >>> from torch import nn
    >>> [name for name, _, _ in named_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2, 2)))]
    ['0', '2']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.ao.nn.quantized as nnq
from torch import nn

if TYPE_CHECKING:  # pandas is imported by the tables only: a sweep worker never needs it (33 MiB)
    import pandas as pd

WEIGHT_TABLE_DTYPES = {
    "layer": "str",
    "kind": "str",
    "shape": "str",
    "params": "int64",
    "nonzero": "int64",
    "sparsity": "float64",
}
"""Columns of :func:`weight_table` and their pandas dtypes."""
WEIGHT_TABLE_COLUMNS = tuple(WEIGHT_TABLE_DTYPES)
"""Columns of :func:`weight_table`."""


def layer_kind(module: nn.Module) -> str | None:
    """``"Conv2d"`` or ``"Linear"`` for float, QAT, fused-QAT and INT8 conv / linear layers, else None."""
    if isinstance(module, nn.Conv2d | nnq.Conv2d):
        return "Conv2d"
    if isinstance(module, nn.Linear | nnq.Linear):
        return "Linear"
    return None


def is_quantized_layer(module: nn.Module) -> bool:
    """True for INT8 modules whose weight is packed (read it with :func:`layer_weight`)."""
    return isinstance(module, nnq.Conv2d | nnq.Linear)


def layer_weight(module: nn.Module) -> torch.Tensor:
    """The (dequantized) weight of a conv / linear layer as a plain float tensor, detached."""
    if is_quantized_layer(module):
        return module.weight().dequantize()
    return module.weight.detach()


def named_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield ``(qualified name, module, kind)`` for every conv / linear layer in module order."""
    for name, module in model.named_modules():
        kind = layer_kind(module)
        if kind is not None:
            yield name, module, kind


def _all_tensors(model: nn.Module) -> Iterator[torch.Tensor]:
    seen: set[int] = set()
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if id(param) not in seen:  # shared parameters count once
                seen.add(id(param))
                yield param.detach()
        if is_quantized_layer(module):
            bias = module.bias()
            yield module.weight().dequantize()
            if bias is not None:
                yield bias.detach()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, nonzero parameters), BatchNorm and classifier included, INT8 weights included.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        (8, 8)
    """
    total = nonzero = 0
    for tensor in _all_tensors(model):
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def weight_table(model: nn.Module) -> pd.DataFrame:
    """One row per conv / linear layer: layer, kind, shape, params, nonzero, sparsity (weights only).

    Example:
        >>> weight_table(nn.Sequential(nn.Linear(4, 2)))[["layer", "shape", "params"]].values.tolist()
        [['0', '2x4', 8]]
    """
    import pandas as pd

    return pd.DataFrame(weight_rows(model), columns=list(WEIGHT_TABLE_COLUMNS)).astype(WEIGHT_TABLE_DTYPES)


def weight_rows(model: nn.Module) -> list[dict[str, Any]]:
    """:func:`weight_table` as a list of dicts (no pandas).

    Example:
        >>> weight_rows(nn.Sequential(nn.Linear(4, 2)))[0]["shape"]
        '2x4'
    """
    rows = []
    for name, module, kind in named_layers(model):
        weight = layer_weight(module)
        params, nonzero = weight.numel(), int(torch.count_nonzero(weight))
        rows.append(
            {
                "layer": name,
                "kind": kind,
                "shape": "x".join(str(s) for s in weight.shape),
                "params": params,
                "nonzero": nonzero,
                "sparsity": 1.0 - nonzero / params if params else 0.0,
            }
        )
    return rows
