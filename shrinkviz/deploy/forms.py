"""The deployment form of a model: FP32 or converted INT8 (a fake-quant QAT model has none)."""

from __future__ import annotations

from torch import nn


def model_dtype(model: nn.Module) -> str:
    """``int8`` for a converted INT8 model, ``fp32`` otherwise.

    Raises:
        ValueError: a fake-quant QAT model (its speed says nothing about deployment).
    """
    from shrinkviz.core.layers import is_quantized_layer
    from shrinkviz.techniques.quant import is_qat

    if is_qat(model):
        raise ValueError(
            "latency of a fake-quant QAT model is not a deployment figure; convert it to INT8 "
            "first (shrinkviz.techniques.quant.convert)"
        )
    return "int8" if any(is_quantized_layer(m) for m in model.modules()) else "fp32"
