"""INT8 quantization behind one interface: QAT (fake-quant -> ``fit`` -> convert) and PTQ (calibrate ->
convert), both producing a real INT8 model for x86 CPUs; export for deployment in :mod:`shrinkviz.deploy.export`.

One route for every model: graph mode (:mod:`shrinkviz.techniques.quant.graph`, ``torch.ao`` FX with the
x86 backend config), which needs no QuantStub or FloatFunctional, fuses conv-bn(-relu) and add-relu by
itself and keeps the float model's layer names, so registry models, torchvision, timm and hand-written
nets all quantize alike. The eager-mode functions (:mod:`shrinkviz.techniques.quant.eager`:
``prepare_qat`` / ``convert`` / ``quantize_ptq``, for models built with stubs) remain as a lower-level API
and as the measured reference.

Example:
    >>> import shrinkviz as sv
    >>> from shrinkviz.loop.train import TrainConfig
    >>> ds = sv.load_dataset("digits").subset(train=128, val=32, test=32)
    >>> model = sv.create_model("tiny_cnn", dataset=ds)
    >>> res = quantize(model, ds, "qat", cfg=TrainConfig.preset("adam_fast").replace(epochs=1), progress=False)
    >>> is_int8(res.model), res.history[0]["stage"]
    (True, 'Q')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shrinkviz.core.registry import unknown_name
from shrinkviz.data import Dataset, as_dataset
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import check_masks
from shrinkviz.loop.train import check_precision, fit
from shrinkviz.techniques.quant.eager import (
    BACKEND,
    QuantizationError,
    convert,
    int8_weights,
    is_int8,
    is_qat,
    prepare_qat,
    quantize_ptq,
    run_named,
)
from shrinkviz.techniques.quant.graph import calibrate_graph, convert_graph, prepare_qat_graph, uses_stubs
from shrinkviz.techniques.result import Result, as_model

METHODS = ("qat", "ptq")


def qat_config(epochs: int = 3) -> Any:
    """The default QAT training config: SGD lr 1e-3, Nesterov, cosine, the dataset's standard augmentation,
    ``epochs`` epochs.

    QAT starts from a trained model, so it finetunes gently.

    Example:
        >>> qat_config(5).epochs
        5
    """
    return TrainConfig.preset("qat").replace(epochs=epochs)


def quantize(
    model: nn.Module | Result,
    data: Any,
    method: str = "qat",
    cfg: TrainConfig | str | None = None,
    *,
    calib_batches: int = 32,
    example_input: torch.Tensor | None = None,
    callbacks: Sequence[Any] = (),
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
) -> Result:
    """Quantize a float model to INT8: ``qat`` (fake-quant, train with ``fit``, convert) or ``ptq``.

    The input model is not modified. Pruning masks on it are honoured (zeros stay zero in the INT8
    weights).

    Args:
        model: a float model (registry models, or any symbolically traceable ``nn.Module``), or a
            :class:`Result`.
        data: a ``shrinkviz.data.Dataset`` or dataset name (PTQ also accepts tensors / iterables of batches).
        method: ``qat`` or ``ptq``.
        cfg: ``TrainConfig`` (or a preset name) of the QAT training; default ``DEFAULTS["quantize"]``
            (the ``qat`` preset, see :func:`qat_config`).
        calib_batches: PTQ calibration batches.
        example_input: an input batch for tracing and the conversion check; default: random inputs of
            ``model.input_shape`` or of the dataset's input shape.
        callbacks: extra ``fit`` callbacks for QAT (e.g. distillation).
        seed: training seed.
        device: training device (conversion is always on the CPU).
        progress: show a progress bar.

    Returns:
        A :class:`Result`: the converted INT8 model (CPU, eval mode) and the QAT history (stage ``Q``;
        empty for PTQ).

    Raises:
        ValueError: unknown method.
        QuantizationError: a layer cannot be quantized (named), or the model cannot be traced.
        MaskError: pruned weights of ``model`` are nonzero (see ``shrinkviz.loop.masks.check_masks``).
    """
    if method not in METHODS:
        raise unknown_name("quantization method", method, METHODS, "method")
    if method == "qat":
        cfg = resolve_config(cfg, "quantize")
        check_precision(cfg.precision, qat=True)
    model = as_model(model)
    check_masks(model, "quantize")
    if isinstance(data, str):
        data = as_dataset(data)
    example_input = example_batch(model, data, example_input)
    if method == "ptq":
        return Result(calibrate_graph(model, data, example_input, calib_batches=calib_batches), [])
    if not isinstance(data, Dataset):
        raise TypeError(
            f"QAT trains on a shrinkviz.data.Dataset or a dataset name, got {type(data).__name__}"
        )
    qat = prepare_qat_graph(model, example_input)
    history = fit(
        qat,
        data,
        cfg,
        callbacks=callbacks,
        seed=seed,
        device=device,
        stage="Q",
        progress=progress,
    )
    return Result(convert_graph(qat), history)


def example_batch(model: nn.Module, data: Any, example_input: torch.Tensor | None = None) -> torch.Tensor:
    """An input batch for tracing: ``example_input``, else random inputs of ``model.input_shape``, of the
    dataset's ``input_shape``, or the first two rows of a tensor of inputs.

    Example:
        >>> example_batch(nn.Linear(3, 2), torch.zeros(5, 3)).shape
        torch.Size([2, 3])
    """
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
            raise TypeError("example_input must be a batch tensor (N, ...), e.g. torch.randn(2, 3, 32, 32)")
        return example_input
    shape = getattr(model, "input_shape", None) or getattr(data, "input_shape", None)
    if shape is not None:
        return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    if isinstance(data, torch.Tensor) and data.dim() >= 2:
        return data[:2]
    raise QuantizationError(
        f"{type(model).__name__} has no input_shape and the data none either: pass example_input=<a batch>"
    )


__all__ = [
    "BACKEND",
    "calibrate_graph",
    "convert_graph",
    "example_batch",
    "prepare_qat_graph",
    "uses_stubs",
    "METHODS",
    "QuantizationError",
    "convert",
    "int8_weights",
    "is_int8",
    "is_qat",
    "prepare_qat",
    "qat_config",
    "quantize",
    "quantize_ptq",
    "run_named",
]
