"""The packed artefact: exact round trip for float and INT8 (per-channel and per-tensor) models, smaller
than the dense state_dict under gzip when sparse, no bigger when dense, and clear errors on bad files."""

from __future__ import annotations

import gzip
import io

import pytest
import torch

from shrinkviz.metrics.packed import load_packed, pack_state_dict, packed_bytes, unpack_state_dict
from shrinkviz.metrics.size import artefact_bytes, deployable_state_dict, measure_size
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import prune
from shrinkviz.techniques.quant import convert, prepare_qat


def _int8(model):
    qat = prepare_qat(model)
    qat(model.example_input(8))
    return convert(qat)


def _assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, tuple):  # quantized Linear keeps (weight, bias) in its state_dict
            assert isinstance(y, tuple) and len(x) == len(y), key
            for u, v in zip(x, y, strict=True):
                _assert_same_state({key: u}, {key: v})
        elif isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and x.shape == y.shape, key
            if x.is_quantized:
                assert x.qscheme() == y.qscheme(), key
                assert torch.equal(x.int_repr(), y.int_repr()), key
                assert torch.equal(x.dequantize(), y.dequantize()), key
            else:
                assert torch.equal(x, y), key
        else:
            assert x == y, key


def test_float_round_trip_and_model_outputs(tmp_path):
    model = prune(
        create_model("mnistnet", input_shape=(1, 28, 28), seed=0), strategy="global_weight", compression=10
    ).model
    state = deployable_state_dict(model)
    row = measure_size(model, "packed", path=tmp_path / "model.packed.pt")
    assert (
        row["size_format"] == "packed"
        and (tmp_path / "model.packed.pt").stat().st_size == row["size_bytes_raw"]
    )
    restored = load_packed(tmp_path / "model.packed.pt")
    _assert_same_state(state, restored)
    fresh = create_model("mnistnet", input_shape=(1, 28, 28), seed=1)
    fresh.load_state_dict(restored)
    x = model.example_input(4)
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))


def test_int8_round_trip_keeps_int8_kernels_and_outputs():
    model = prune(
        create_model("mnistnet", input_shape=(1, 28, 28), seed=0), strategy="global_weight", compression=10
    ).model
    int8 = _int8(model)
    state = deployable_state_dict(int8)
    restored = load_packed(packed_bytes(state))
    _assert_same_state(state, restored)
    target = _int8(create_model("mnistnet", input_shape=(1, 28, 28), seed=1))
    target.load_state_dict(restored)
    x = model.example_input(4)
    assert torch.equal(int8(x), target(x))
    weights = [
        m.weight()
        for m in target.modules()
        if type(m).__name__ in ("Conv2d", "Linear") and callable(getattr(m, "weight", None))
    ]
    assert weights and all(w.dtype == torch.qint8 for w in weights)


def test_per_tensor_quantized_and_zero_point_round_trip():
    codes = torch.randint(-3, 4, (64, 32), dtype=torch.int8)
    codes[torch.rand(64, 32) < 0.9] = 5  # the zero point: these positions mean 0.0
    per_tensor = torch._make_per_tensor_quantized_tensor(codes, 0.25, 5)
    per_channel = torch._make_per_channel_quantized_tensor(
        codes, torch.rand(32, dtype=torch.float64) + 0.1, torch.full((32,), 5), 1
    )
    state = {
        "t": per_tensor,
        "c": per_channel,
        "dense": torch.randn(4, 4),
        "flag": torch.tensor(True),
        "n": 7,
    }
    packed = pack_state_dict(state)
    assert isinstance(packed["state"]["t"], dict) and isinstance(packed["state"]["c"], dict)  # sparse: packed
    assert packed["values"]["torch.int8"].numel() == 2 * int(
        (codes != 5).sum()
    )  # one values stream per dtype
    assert isinstance(packed["state"]["dense"], torch.Tensor)  # dense: packing would not save bytes
    _assert_same_state(state, unpack_state_dict(packed))


def test_sparse_is_smaller_under_gzip_and_dense_costs_nothing_extra():
    model = create_model("mnistnet", input_shape=(1, 28, 28), seed=0)
    dense_plain, dense_packed = measure_size(model), measure_size(model, "packed")
    assert dense_packed["size_bytes_raw"] - dense_plain["size_bytes_raw"] < 1000
    sparse_int8 = _int8(prune(model, strategy="global_weight", compression=10).model)
    plain, packed = measure_size(sparse_int8), measure_size(sparse_int8, "packed")
    assert packed["size_bytes_raw"] < plain["size_bytes_raw"] / 3  # 1 bit per weight + 10% of the bytes
    assert packed["size_bytes_gzip"] < 0.95 * plain["size_bytes_gzip"]  # 0.93 measured on random init


def test_bad_files():
    with pytest.raises(ValueError, match="not a shrinkviz packed artefact"):
        unpack_state_dict({"weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="upgrade shrinkviz"):
        unpack_state_dict({"format": "shrinkviz-packed", "version": 99, "state": {}})
    packed = pack_state_dict({"w": torch.zeros(100).index_fill_(0, torch.tensor([3, 50]), 1.0)})
    packed["masks"] = torch.full_like(packed["masks"], 255)
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    with pytest.raises(ValueError, match="mask marks 100 nonzeros but 2 values"):
        load_packed(buffer.getvalue())
    packed["values"]["torch.float32"] = packed["values"]["torch.float32"][:1]
    with pytest.raises(ValueError, match="outside the streams"):
        unpack_state_dict(packed)
    with pytest.raises(Exception):  # noqa: B017 - torch's own unpickling error for a non-torch file
        load_packed(gzip.compress(b"not a torch file"))


def test_artefact_bytes_names_packed():
    model = create_model("tiny_mlp", input_shape=(1, 8, 8), seed=0)
    assert load_packed(artefact_bytes(model, "packed")).keys() == model.state_dict().keys()
