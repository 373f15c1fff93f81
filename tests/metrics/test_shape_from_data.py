"""Verbs that need an input shape take it from the data when the model has none."""

from __future__ import annotations

import torch
from torch import nn

import shrinkviz as sv


def _plain_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def test_measure_times_and_sizes_a_model_without_input_shape(digits):
    net = _plain_net()
    assert not hasattr(net, "input_shape")
    row = sv.measure(
        net, digits, size="onnx", latency={"rounds": 3, "min_time_s": 0, "warmup": 1, "warmup_s": 0}
    )
    assert row["latency_input_shape"] == "1x8x8" and row["latency_ms_p50"] > 0
    assert row["size_bytes_raw"] > 4 * sum(p.numel() for p in net.parameters())
    assert row["macs"] == 4 * 9 * 64 + 256 * 10


def test_int8_of_a_plain_model_carries_the_data_shape_to_latency(digits):
    int8 = sv.quantize(_plain_net(), digits, "ptq", calib_batches=2).model
    assert int8.input_shape == (1, 8, 8)
    row = sv.measure(int8, digits, latency={"runtime": "compiled", "rounds": 3, "min_time_s": 0, "warmup": 1})
    assert row["latency_runtime"] == "compiled" and row["latency_input_shape"] == "1x8x8"
