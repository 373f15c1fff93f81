"""Counting what a model costs: parameters (total and nonzero), multiply-accumulates measured from the
real output shapes of a forward pass, nonzero-aware MACs, nonzero activations, and a per-layer table.

MACs come from forward hooks that record each Conv2d / Linear output shape for one input, so unpadded,
strided and grouped convolutions are counted as they run (ShrinkBench assumed "same" padding and
reported 4.40M MACs for MnistNet on 28x28; the true figure is 2,293,000). Biases, BatchNorm, pooling
and activations are not counted (as in ShrinkBench). INT8 modules (``torch.ao.nn.quantized``) keep
their weights packed rather than as Parameters; they are recognised and counted from ``weight()``.

Example:
    >>> from shrinkviz.models import create_model
    >>> total_macs(create_model("mnistnet", input_shape=(1, 28, 28)))
    2293000
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from shrinkviz.core.device import model_device
from shrinkviz.core.layers import (
    WEIGHT_TABLE_COLUMNS,
    WEIGHT_TABLE_DTYPES,
    count_parameters,
    is_quantized_layer,
    layer_kind,
    layer_weight,
    named_layers,
    weight_rows,
    weight_table,
)

if TYPE_CHECKING:  # only layer_table needs pandas; a sweep worker counts with layer_rows
    import pandas as pd

__all__ = [
    "LAYER_TABLE_COLUMNS",
    "count_parameters",
    "is_quantized_layer",
    "layer_kind",
    "layer_macs",
    "layer_rows",
    "layer_table",
    "layer_weight",
    "named_layers",
    "nonzero_activations",
    "total_macs",
    "weight_table",
]

LAYER_TABLE_COLUMNS = (*WEIGHT_TABLE_COLUMNS, "macs", "macs_nonzero")
"""Columns of :func:`layer_table` (``shrinkviz.experiments.schema.LAYER_COLUMNS`` without ``run_id``)."""


def _resolve_input_shape(model: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} has no input_shape attribute; pass input_shape=(C, H, W)")
    return tuple(int(v) for v in shape)


def _example(model: nn.Module, shape: tuple[int, ...], batch: int = 1) -> torch.Tensor:
    return torch.zeros(batch, *shape, device=model_device(model))


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> dict[str, int]:
    """Dense multiply-accumulates of every conv / linear layer for one input, from real output shapes.

    Conv2d: ``output elements x (in_channels / groups) x kernel area``; Linear: ``output elements x
    in_features``. A layer called twice counts twice; a layer never called counts 0.

    Args:
        model: any module; registry models know their ``input_shape``.
        input_shape: (C, H, W) of one input when the model has no ``input_shape``.

    Example:
        >>> layer_macs(nn.Sequential(nn.Conv2d(1, 2, 3)), input_shape=(1, 5, 5))
        {'0': 162}
    """
    shape = _resolve_input_shape(model, input_shape)
    macs = {name: 0 for name, _, _ in named_layers(model)}
    handles = []

    def hook(name: str, kind: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            per_output = (
                module.in_features
                if kind == "Linear"
                else (module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1])
            )
            macs[name] += int(output.numel()) * int(per_output)

        return record

    for name, module, kind in named_layers(model):
        handles.append(module.register_forward_hook(hook(name, kind)))
    was_training = model.training
    model.eval()
    try:
        model(_example(model, shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs


def total_macs(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """Dense multiply-accumulates of all conv / linear layers for one input."""
    return sum(layer_macs(model, input_shape).values())


def layer_table(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, *, macs: dict[str, int] | None = None
) -> pd.DataFrame:
    """One row per conv / linear layer: layer, kind, shape, params, nonzero, sparsity, macs, macs_nonzero.

    ``params`` and ``nonzero`` count weight elements (not biases); ``macs_nonzero`` is the layer's
    MACs scaled by its nonzero-weight fraction (ShrinkBench's definition of sparse MACs).

    Example:
        >>> from shrinkviz.models import create_model
        >>> table = layer_table(create_model("tiny_mlp", input_shape=(1, 8, 8)))
        >>> table["layer"].tolist(), table["macs"].tolist()
        (['features.1.linear', 'classifier'], [2048, 320])
    """
    import pandas as pd

    rows = layer_rows(model, input_shape, macs=macs)
    dtypes = {**WEIGHT_TABLE_DTYPES, "macs": "int64", "macs_nonzero": "int64"}
    return pd.DataFrame(rows, columns=list(LAYER_TABLE_COLUMNS)).astype(dtypes)


def layer_rows(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, *, macs: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """:func:`layer_table` as a list of dicts (no pandas: what a sweep worker stores for each run).

    Example:
        >>> from shrinkviz.models import create_model
        >>> [r["macs"] for r in layer_rows(create_model("tiny_mlp", input_shape=(1, 8, 8)))]
        [2048, 320]
    """
    if macs is None:
        macs = layer_macs(model, input_shape)
    rows = weight_rows(model)
    for row in rows:
        dense, params = macs.get(row["layer"], 0), row["params"]
        # exact integer rounding of macs * nonzero / params (conv MACs are a multiple of the weight count)
        row["macs"] = dense
        row["macs_nonzero"] = (dense * row["nonzero"] + params // 2) // params if params else 0
    return rows


@torch.no_grad()
def nonzero_activations(model: nn.Module, inputs: torch.Tensor) -> float:
    """Nonzero outputs of all ReLU layers for one input, averaged over the batch ``inputs``.

    Counts ``nn.ReLU`` modules and fused / INT8 ``...ReLU`` modules (conv-relu, linear-relu) whose
    ReLU is not a child module. Functional ReLUs inside other modules are not seen.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 4), nn.ReLU())
        >>> _ = net[0].weight.data.fill_(1.0), net[0].bias.data.copy_(torch.tensor([-2.0, -1.0, 0.5, 1.0]))
        >>> nonzero_activations(net, torch.tensor([[0.0], [3.0]]))  # 2 of 4 ReLUs fire for x=0, all 4 for x=3
        3.0
    """
    count = torch.zeros((), dtype=torch.int64)
    handles = []

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal count
        out = output.dequantize() if output.is_quantized else output
        count += int(torch.count_nonzero(out))

    for module in model.modules():
        is_relu = isinstance(module, nn.ReLU) or (
            "ReLU" in type(module).__name__ and not any(isinstance(c, nn.ReLU) for c in module.children())
        )
        if is_relu:
            handles.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return float(count) / inputs.shape[0]
