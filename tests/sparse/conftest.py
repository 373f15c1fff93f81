"""Whether torch.ao's fbgemm INT8 kernels are an exact reference on this CPU."""

from __future__ import annotations

import functools

import pytest
import torch


@functools.cache
def fbgemm_accumulates_exactly() -> bool:
    """False where fbgemm sums uint8 x int8 products in pairs into saturating int16 (``vpmaddubsw``: AVX2
    without VNNI), so large activations times large weights come out clipped: a linear layer of 8 inputs
    at 255 and weights at 127 must accumulate 259,080 exactly."""
    import torch.ao.nn.quantized as nnq

    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        qw = torch.quantize_per_tensor(torch.full((1, 8), 127.0), 1.0, 0, torch.qint8)
        mod = nnq.Linear(8, 1)
        mod.set_weight_bias(qw, torch.zeros(1))
        mod.scale, mod.zero_point = 2048.0, 0  # 259,080 / 2048 = 126.5 -> 126 or 127; saturated: 63.99 -> 64
        x = torch.quantize_per_tensor(torch.full((1, 8), 255.0), 1.0, 0, torch.quint8)
        return int(mod(x).int_repr()) in (126, 127)
    finally:
        torch.backends.quantized.engine = old


@pytest.fixture
def exact_int8_reference():
    """Skips a test that compares the INT8 kernels with torch.ao bit for bit on full-range activations where
    torch.ao's kernels clip their own sums (``test_int8_bit_exact_below_fbgemm_saturation`` still runs)."""
    if not fbgemm_accumulates_exactly():
        pytest.skip(
            "torch.ao's fbgemm saturates int16 pair sums on this CPU (AVX2 without VNNI): no exact reference"
        )
