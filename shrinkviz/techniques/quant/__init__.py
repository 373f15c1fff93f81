"""INT8 quantization behind one interface: QAT (fake-quant -> ``fit`` -> convert) and PTQ (calibrate ->
convert), both producing a real INT8 model for x86 CPUs; export for deployment in :mod:`shrinkviz.deploy.export`.

The backend is PyTorch eager-mode quantization; :mod:`shrinkviz.techniques.quant.eager` says why (measured).

Example:
    >>> import shrinkviz as sv
    >>> from shrinkviz.loop.train import TrainConfig
    >>> ds = sv.load_dataset("digits").subset(train=128, val=32, test=32)
    >>> model = sv.create_model("tiny_cnn", dataset=ds)
    >>> int8 = quantize(model, ds, "qat", TrainConfig.preset("adam_fast").replace(epochs=1), progress=False)
    >>> is_int8(int8), int8.shrinkviz_history[0]["stage"]
    (True, 'Q')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

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

METHODS = ("qat", "ptq")


def qat_config(epochs: int = 3) -> Any:
    """The default QAT training config: SGD lr 1e-3, Nesterov, cosine, the dataset's standard augmentation,
    ``epochs`` epochs.

    QAT starts from a trained model, so it finetunes gently.

    Example:
        >>> qat_config(5).epochs
        5
    """
    from shrinkviz.loop.train import TrainConfig

    return TrainConfig(
        epochs=epochs,
        batch_size=128,
        optimizer="sgd",
        lr=1e-3,
        momentum=0.9,
        nesterov=True,
        weight_decay=0.0,
        schedule="cosine",
        augment="auto",
    )


def quantize(
    model: nn.Module,
    data: Any,
    method: str = "qat",
    cfg: Any = None,
    *,
    calib_batches: int = 32,
    callbacks: Sequence[Any] = (),
    seed: int = 0,
    device: Any = None,
    progress: bool = True,
) -> nn.Module:
    """Quantize a float model to INT8: ``qat`` (fake-quant, train with ``fit``, convert) or ``ptq``.

    The input model is not modified. Pruning masks on it are honoured (zeros stay zero in the INT8
    weights). For QAT, the training history is attached as ``result.shrinkviz_history`` (stage ``Q``).

    Args:
        model: a float model (registry models all qualify).
        data: a ``shrinkviz.data.Dataset`` (PTQ also accepts tensors / iterables of batches).
        method: ``qat`` or ``ptq``.
        cfg: ``TrainConfig`` (or a preset name) of the QAT training; default :func:`qat_config`.
        calib_batches: PTQ calibration batches.
        callbacks: extra ``fit`` callbacks for QAT (e.g. distillation).
        seed: training seed.
        device: training device (conversion is always on the CPU).
        progress: show a progress bar.

    Returns:
        The converted INT8 model (CPU, eval mode).

    Raises:
        ValueError: unknown method.
        QuantizationError: a layer cannot be quantized (named).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: valid methods are {', '.join(METHODS)}")
    if method == "ptq":
        return quantize_ptq(model, data, calib_batches=calib_batches)
    from shrinkviz.data import Dataset
    from shrinkviz.loop.train import TrainConfig, fit

    if not isinstance(data, Dataset):
        raise TypeError(f"QAT trains on a shrinkviz.data.Dataset, got {type(data).__name__}")
    cfg = qat_config() if cfg is None else TrainConfig.resolve(cfg)
    qat = prepare_qat(model)
    history = fit(qat, data, cfg, callbacks=callbacks, seed=seed, device=device, stage="Q", progress=progress)
    int8 = convert(qat)
    int8.shrinkviz_history = history
    return int8


__all__ = [
    "BACKEND",
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
