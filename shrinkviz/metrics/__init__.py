"""Metrics of a (compressed) model in one call: accuracy, counts, MACs, theoretical speedup, activations.

:func:`measure` returns a flat dict keyed by ``shrinkviz.experiments.schema.RUN_COLUMNS`` names (plus
``activations_nonzero``), ready to become one row of the runs table. Counting lives in
:mod:`shrinkviz.metrics.counts`; checkpoint size and measured latency are added by
``shrinkviz.metrics.size`` / ``shrinkviz.metrics.latency`` (see the marked section of :func:`measure`).

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.models import create_model
    >>> ds = load_dataset("digits")
    >>> row = measure(create_model("tiny_mlp", dataset=ds, seed=0), ds)
    >>> row["compression_ratio"], row["speedup_theoretical"]
    (1.0, 1.0)
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from shrinkviz.core.device import model_device
from shrinkviz.data import Dataset, Normalizer, batches, load_dataset
from shrinkviz.loop.masks import revived_message
from shrinkviz.metrics.counts import (
    count_parameters,
    layer_macs,
    layer_rows,
    layer_table,
    nonzero_activations,
    total_macs,
    weight_table,
)
from shrinkviz.metrics.paired import pack_correct

SPLITS = ("train", "val", "test")

__all__ = [
    "count_metrics",
    "count_parameters",
    "layer_macs",
    "layer_table",
    "measure",
    "nonzero_activations",
    "total_macs",
    "weight_table",
]


def count_metrics(
    model: nn.Module, *, baseline: nn.Module | None = None, input_shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Parameter and multiply-add counts, no data needed: params, params_nonzero, compression_ratio, macs,
    macs_nonzero, speedup_theoretical.

    Args:
        model: the model to count (``input_shape`` defaults to ``model.input_shape``).
        baseline: the uncompressed model; its dense parameters and MACs are the numerators of the
            ratios (default: the model itself, ShrinkBench's definitions).
        input_shape: (C, H, W) of one input.

    Example:
        >>> from shrinkviz.models import create_model
        >>> count_metrics(create_model("mnistnet", input_shape=(1, 28, 28)))["macs"]
        2293000
    """
    params, params_nonzero = count_parameters(model)
    rows = layer_rows(model, input_shape)
    macs, macs_nonzero = sum(r["macs"] for r in rows), sum(r["macs_nonzero"] for r in rows)
    if baseline is not None:
        base_params, _ = count_parameters(baseline)
        base_macs = total_macs(baseline, input_shape)
    else:
        base_params, base_macs = params, macs
    return {
        "params": params,
        "params_nonzero": params_nonzero,
        "compression_ratio": base_params / params_nonzero if params_nonzero else float("inf"),
        "macs": macs,
        "macs_nonzero": macs_nonzero,
        "speedup_theoretical": base_macs / macs_nonzero if macs_nonzero else float("inf"),
    }


def measure(
    model: nn.Module,
    data: Dataset | str,
    *,
    split: str = "test",
    baseline: nn.Module | None = None,
    activation_batch: int = 128,
    size: bool | str = False,
    latency: dict[str, Any] | None = None,
    per_example: bool = False,
) -> dict[str, Any]:
    """Accuracy and cost of ``model`` as one flat dict (``RUN_COLUMNS`` names + ``activations_nonzero``).

    Args:
        model: the model to measure (a registry model or any module; shapes come from ``data`` when the
            model has no ``input_shape``).
        data: Dataset or dataset name; accuracy on ``split`` via :func:`shrinkviz.loop.train.evaluate`.
        split: ``"test"`` (reporting; default), ``"val"`` or ``"train"``.
        baseline: the uncompressed model. Its dense parameters and MACs become the numerators of
            ``compression_ratio`` and ``speedup_theoretical``, so a structurally pruned (smaller, dense)
            model gets its real ratio and speedup. Default: the model itself (ShrinkBench's definitions:
            params / nonzero params, dense MACs / nonzero MACs).
        activation_batch: examples of ``split`` over which nonzero ReLU outputs per input are averaged.
        size: also measure the deployable artefact's size (``size_bytes_raw``, ``size_bytes_gzip``); True for
            the default format, or a format name of ``shrinkviz.metrics.size``.
        latency: options for measured latency (``latency_ms_p50``, ``latency_ms_p90``, ...); None skips it.
        per_example: also return ``<split>_correct``: which examples were right, packed as text
            (:func:`shrinkviz.metrics.paired.pack_correct`), for paired statistics (the runner stores it).

    Returns:
        top1, top5, params, params_nonzero, compression_ratio, macs, macs_nonzero, speedup_theoretical,
        activations_nonzero (and size / latency keys when asked).

    Example:
        >>> from shrinkviz.models import create_model
        >>> from shrinkviz.techniques.prune import prune
        >>> model = create_model("tiny_cnn", dataset=load_dataset("digits"), seed=0)
        >>> round(measure(prune(model, strategy="layer_weight", compression=4).model, "digits")["compression_ratio"], 2)
        4.0
    """
    from shrinkviz.loop.train import evaluate

    if split not in SPLITS:
        raise ValueError(f"split={split!r}; valid: {', '.join(SPLITS)}")
    if isinstance(data, str):
        data = load_dataset(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a shrinkviz.data.Dataset or a dataset name, got {type(data).__name__}")
    if activation_batch < 1:
        raise ValueError(f"activation_batch={activation_batch}: must be >= 1")
    stale = revived_message(model, "measure")
    if stale:
        warnings.warn(stale, UserWarning, stacklevel=2)
    normalize = Normalizer(data.mean, data.std)
    evaluation = evaluate(model, getattr(data, split), normalize, per_example=per_example)
    inputs, _ = next(batches(getattr(data, split), activation_batch, normalize, model_device(model)))
    row: dict[str, Any] = {
        "top1": evaluation["top1"],
        "top5": evaluation["top5"],
        **({f"{split}_correct": pack_correct(evaluation["correct"].numpy())} if per_example else {}),
        **count_metrics(model, baseline=baseline, input_shape=data.input_shape),
        "activations_nonzero": nonzero_activations(model, inputs),
    }
    # ---- deployment metrics --------------------------------------------------------------------------------
    # Contract: shrinkviz.metrics.size.size_metrics(model) -> {"size_bytes_raw", "size_bytes_gzip"} and
    # shrinkviz.metrics.latency.latency_metrics(model, **latency) -> {"latency_ms_p50", "latency_ms_p90",
    # "latency_runtime", "latency_threads", "latency_batch", "cpu_model"}. Off by default.
    # a model without an input_shape attribute is measured at the data's shape
    shape = {} if getattr(model, "input_shape", None) else {"input_shape": tuple(data.input_shape)}
    if size:
        from shrinkviz.metrics import size as size_module

        fmt = () if size is True else (size,)
        row.update(size_module.size_metrics(model, *fmt, **shape))
    if latency is not None:
        from shrinkviz.metrics import latency as latency_module

        row.update(latency_module.latency_metrics(model, **{**shape, **latency}))
    # ------------------------------------------------------------------------------------------------------
    return row
