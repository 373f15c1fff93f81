"""Size of the deployable artefact: exact bytes of what is saved, masks excluded, INT8 and sparsity shown
in raw / gzip figures, bad input rejected."""

from __future__ import annotations

import copy
import gzip
import io

import pytest
import torch

from shrinkviz.metrics.size import (
    artefact_bytes,
    deployable_state_dict,
    gzip_size,
    measure_size,
    size_metrics,
)
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import prune, remove_masks
from shrinkviz.techniques.quant import convert, prepare_qat


def _int8(model):
    qat = prepare_qat(model)
    qat(model.example_input(4))
    return convert(qat)


def test_raw_is_exactly_the_saved_state_dict(tmp_path):
    model = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    row = measure_size(model, path=tmp_path / "model.pt")
    assert row == {
        "size_bytes_raw": len(buffer.getvalue()),
        "size_bytes_gzip": len(gzip.compress(buffer.getvalue(), 9, mtime=0)),
        "size_format": "state_dict",
    }
    assert (tmp_path / "model.pt").stat().st_size == row["size_bytes_raw"]
    loaded = torch.load(tmp_path / "model.pt", weights_only=True)
    assert sorted(loaded) == sorted(model.state_dict())


def test_masks_are_not_part_of_the_artefact():
    model = create_model("mnistnet", input_shape=(1, 28, 28), seed=0)
    pruned = prune(model, strategy="global_weight", compression=10).model
    assert any(k.endswith("weight_mask") for k in pruned.state_dict())
    assert not any(k.endswith("_mask") for k in deployable_state_dict(pruned))
    baked = remove_masks(copy.deepcopy(pruned))
    assert measure_size(pruned) == measure_size(baked)


def test_int8_is_4x_smaller_and_sparsity_shows_only_in_gzip():
    model = create_model("mnistnet", input_shape=(1, 28, 28), seed=0)
    fp32 = measure_size(model)
    int8 = measure_size(_int8(model))
    pruned = prune(model, strategy="global_weight", compression=10).model
    sparse_fp32 = measure_size(pruned)
    sparse_int8 = measure_size(_int8(pruned))
    assert fp32["size_bytes_raw"] / int8["size_bytes_raw"] > 3.8  # 431k params: 4 bytes -> 1 byte each
    assert abs(sparse_fp32["size_bytes_raw"] - fp32["size_bytes_raw"]) < 2000  # zeros are stored densely
    assert sparse_fp32["size_bytes_gzip"] < fp32["size_bytes_gzip"] / 4
    assert sparse_int8["size_bytes_gzip"] < int8["size_bytes_gzip"] / 3
    assert (
        fp32["size_bytes_raw"] / sparse_int8["size_bytes_gzip"] > 20
    )  # ~uniform 90% zeros: ~1.2 bits/weight


def test_other_formats(tmp_path):
    model = create_model("tiny_mlp", input_shape=(1, 8, 8), seed=0)
    onnx_row = measure_size(model, "onnx", path=tmp_path / "m.onnx")
    assert (
        onnx_row["size_format"] == "onnx"
        and (tmp_path / "m.onnx").stat().st_size == onnx_row["size_bytes_raw"]
    )
    ts = measure_size(_int8(model), "torchscript")
    assert ts["size_format"] == "torchscript" and ts["size_bytes_raw"] > 0
    assert artefact_bytes(model, "onnx")[:2] == (tmp_path / "m.onnx").read_bytes()[:2]


def test_gzip_is_deterministic():
    data = bytes(range(256)) * 100
    assert gzip_size(data) == gzip_size(data) == len(gzip.compress(data, 9, mtime=0))


def test_contract_of_measure():
    model = create_model("tiny_mlp", input_shape=(1, 8, 8), seed=0)
    assert {"size_bytes_raw", "size_bytes_gzip"} <= set(size_metrics(model))


def test_bad_input():
    model = create_model("tiny_mlp", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="format='zip'"):
        measure_size(model, "zip")
    with pytest.raises(ValueError, match="convert it to INT8"):
        measure_size(prepare_qat(model))
