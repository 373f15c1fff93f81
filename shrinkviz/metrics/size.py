"""Size on disk of the deployable artefact, raw and gzip-compressed.

The artefact is, by default, the model's ``state_dict`` saved with ``torch.save`` (``format="state_dict"``)
as a deployment would ship it: for an INT8 model that is the int8 weights with their scales (no FP32
copies), for a pruned model the weights with zeros baked in, *without* the pruning-mask buffers (masks
are training state, not deployment state). ``format="packed"`` is that state_dict with each sparse tensor
stored as a bitmask plus its nonzero values (:mod:`shrinkviz.metrics.packed`; gzip then gets close to the
weights' entropy, which it cannot on zeros stored densely). ``format="torchscript"`` measures a traced + frozen
TorchScript file and ``format="onnx"`` the ONNX file of :func:`shrinkviz.deploy.export.export_onnx`.

Unstructured sparsity stores zeros densely, so it shows only in the gzip figure (``gzip -9``); the raw
figure changes with the dtype (INT8 is ~4x smaller than FP32).

Example:
    >>> from shrinkviz.models import create_model
    >>> row = measure_size(create_model("tiny_mlp", input_shape=(1, 8, 8)))
    >>> sorted(row), row["size_bytes_gzip"] < row["size_bytes_raw"]
    (['size_bytes_gzip', 'size_bytes_raw', 'size_format'], True)
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkviz.core.io import atomic_write_bytes
from shrinkviz.techniques.quant import is_qat

FORMATS = ("state_dict", "packed", "torchscript", "onnx")
MASK_SUFFIX = "_mask"


def deployable_state_dict(model: nn.Module) -> dict[str, Any]:
    """The model's state_dict without pruning-mask buffers (``<param>_mask`` beside ``<param>``).

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> layer.register_buffer("weight_mask", torch.ones(2, 2, dtype=torch.bool))
        >>> sorted(deployable_state_dict(layer))
        ['bias', 'weight']
    """
    state = model.state_dict()
    drop = [k for k in state if k.endswith(MASK_SUFFIX) and k[: -len(MASK_SUFFIX)] in state]
    for key in drop:
        del state[key]
    return state


def artefact_bytes(
    model: nn.Module, format: str = "state_dict", *, input_shape: tuple[int, ...] | None = None
) -> bytes:
    """The bytes of the deployable artefact in ``format`` (one of :data:`FORMATS`).

    Raises:
        ValueError: unknown format, or a fake-quant QAT model (convert it first: it is not deployable).
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: valid formats are {', '.join(FORMATS)}")
    if is_qat(model):
        raise ValueError(
            "a fake-quant QAT model is not a deployable artefact; convert it to INT8 first "
            "(shrinkviz.techniques.quant.convert)"
        )
    buffer = io.BytesIO()
    if format == "state_dict":
        torch.save(deployable_state_dict(model), buffer)
        return buffer.getvalue()
    if format == "packed":
        from shrinkviz.metrics.packed import packed_bytes

        return packed_bytes(deployable_state_dict(model))
    from shrinkviz.deploy.export import export_onnx, quiet_trace, torchscript

    if format == "torchscript":
        scripted = torchscript(model, input_shape=input_shape)
        with quiet_trace():
            torch.jit.save(scripted, buffer)
        return buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=input_shape)
        return path.read_bytes()


def gzip_size(data: bytes, level: int = 9) -> int:
    """Bytes after ``gzip -<level>`` (deterministic: no timestamp).

    Example:
        >>> gzip_size(bytes(10_000)) < 100
        True
    """
    return len(gzip.compress(data, compresslevel=level, mtime=0))


def measure_size(
    model: nn.Module,
    format: str = "state_dict",
    *,
    path: str | os.PathLike[str] | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Raw and gzip size of the deployable artefact.

    Args:
        model: a float (possibly pruned) or converted INT8 model.
        format: ``state_dict`` (default), ``packed`` (sparse tensors as bitmask + values), ``torchscript``
            or ``onnx``.
        path: also write the artefact there (atomically); the figures are of exactly those bytes.
        input_shape: (C, H, W) for traced formats when the model has no ``input_shape``.

    Returns:
        ``{"size_bytes_raw", "size_bytes_gzip", "size_format"}``.
    """
    data = artefact_bytes(model, format, input_shape=input_shape)
    if path is not None:
        atomic_write_bytes(path, data)
    return {"size_bytes_raw": len(data), "size_bytes_gzip": gzip_size(data), "size_format": format}


def size_metrics(model: nn.Module, format: str = "state_dict", **kwargs: Any) -> dict[str, Any]:
    """The contract :func:`shrinkviz.metrics.measure` calls: :func:`measure_size`."""
    return measure_size(model, format, **kwargs)
