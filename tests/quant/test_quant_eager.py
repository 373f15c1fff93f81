"""INT8 QAT / PTQ with the eager x86 backend: real int8 weights and kernels, accuracy after conversion,
every registry model, masks through fusion and conversion, named errors, quiet deprecations."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

import shrinkviz as sv
from shrinkviz.data import Normalizer
from shrinkviz.loop.train import TrainConfig, evaluate, fit
from shrinkviz.models import ShrinkNet, available_models, create_model
from shrinkviz.techniques.prune import get_masks, prune
from shrinkviz.techniques.quant import (
    QuantizationError,
    convert,
    int8_weights,
    is_int8,
    is_qat,
    prepare_qat,
    qat_config,
    quantize,
    quantize_ptq,
)


def _top1(model, data):
    return evaluate(model, data.test, Normalizer(data.mean, data.std))["top1"]


def _assert_real_int8(model: nn.Module) -> None:
    layers = [m for m in model.modules() if isinstance(m, nnq.Conv2d | nnq.Linear)]
    assert layers, "no quantized conv/linear modules"
    assert all(m.weight().dtype == torch.qint8 for m in layers)
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d) for m in model.modules())
    graph = getattr(model, "graph", None)  # graph-mode artefacts quantize the input in the graph itself
    assert any(isinstance(m, nnq.Quantize) for m in model.modules()) or any(
        node.target is torch.quantize_per_tensor for node in (graph.nodes if graph is not None else ())
    )
    assert is_int8(model) and not is_qat(model)


def test_qat_gives_real_int8_model_within_one_point(trained_cnn, digits):
    fp32_top1 = _top1(trained_cnn, digits)
    result = quantize(trained_cnn, digits, "qat", qat_config(2), progress=False)
    int8 = result.model
    _assert_real_int8(int8)
    # packed params hold qint8 weights; the residual adds run as quantized adds
    assert int8.get_submodule("features.0.conv")._weight_bias()[0].dtype == torch.qint8
    quantized_adds = [n for n in int8.graph.nodes if str(n.target) in ("quantized.add", "quantized.add_relu")]
    assert len(quantized_adds) == 2  # the two residual blocks of tiny_cnn
    assert [row["stage"] for row in result.history] == ["Q", "Q"]
    int8_top1 = _top1(int8, digits)  # the converted model's accuracy, not the fake-quant one's
    assert fp32_top1 > 0.85
    assert abs(int8_top1 - fp32_top1) <= 0.01
    assert is_qat(trained_cnn) is False and not is_int8(trained_cnn)  # input untouched


def test_ptq_baseline(trained_cnn, digits):
    int8 = quantize(trained_cnn, digits, "ptq", calib_batches=4).model
    _assert_real_int8(int8)
    assert abs(_top1(int8, digits) - _top1(trained_cnn, digits)) <= 0.03


def _shape(name: str) -> tuple[int, int, int]:
    if name in ("mnistnet", "lenet5"):
        return (1, 28, 28)
    return (1, 8, 8) if name.startswith("tiny") else (3, 8, 8)  # big nets on tiny inputs: fast, same layers


@pytest.mark.parametrize("name", available_models())
def test_every_registry_model_converts(name):
    model = create_model(name, input_shape=_shape(name), num_classes=7, seed=0)
    qat = prepare_qat(model, check=False)
    assert is_qat(qat)
    qat.train()
    qat(model.example_input(4))  # observers see data once
    int8 = convert(qat)
    _assert_real_int8(int8)
    out = int8(model.example_input(3))
    assert out.shape == (3, 7) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    n_float = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    assert len(int8_weights(int8)) == n_float  # every conv/linear became an int8 layer


def test_int8_weights_symmetric_zero_point():
    qat = prepare_qat(create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0))
    qat(torch.randn(8, 1, 8, 8))
    int8 = convert(qat)
    for module in int8.modules():
        if isinstance(module, nnq.Conv2d | nnq.Linear):
            w = module.weight()
            assert w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
            assert int(w.q_per_channel_zero_points().abs().sum()) == 0  # so a pruned 0 maps to int8 0


def test_masks_carried_through_qat_training_and_conversion(digits):
    data = digits.subset(train=128, val=32, test=32)
    model = create_model("tiny_cnn", dataset=data, seed=0)
    pruned = prune(model, strategy="global_weight", compression=4).model
    masks = get_masks(pruned)
    qat = prepare_qat(pruned)
    carried = get_masks(qat)
    assert sorted(carried) == sorted(masks)  # fused QAT modules keep the float names
    for name, mask in masks.items():
        assert torch.equal(carried[name], mask)
    fit(qat, data, TrainConfig.preset("adam_fast").replace(epochs=1), progress=False)
    for name, mask in masks.items():
        weight = qat.get_submodule(name.rpartition(".")[0]).weight
        assert int(weight[~mask].abs().sum()) == 0
    int8 = convert(qat)
    weights = int8_weights(int8)
    for name, mask in masks.items():
        layer = name.rpartition(".")[0]
        assert int((weights[layer][~mask] != 0).sum()) == 0
        assert int((weights[layer] == 0).sum()) >= int((~mask).sum())


def test_ptq_keeps_pruned_zeros(digits):
    model = prune(
        create_model("tiny_cnn", dataset=digits, seed=0), strategy="layer_weight", compression=3
    ).model
    masks = get_masks(model)
    int8 = quantize_ptq(model, digits, calib_batches=2)
    weights = int8_weights(int8)
    for name, mask in masks.items():
        assert int((weights[name.rpartition(".")[0]][~mask] != 0).sum()) == 0


def test_observers_learn_only_in_train_mode():
    qat = prepare_qat(create_model("tiny_mlp", input_shape=(1, 8, 8), seed=0))
    qat.train()
    qat(torch.randn(16, 1, 8, 8))
    scales = {
        k: v.clone() for k, v in qat.state_dict().items() if k.endswith("activation_post_process.scale")
    }
    assert scales
    qat.eval()
    qat(100 * torch.randn(16, 1, 8, 8))  # evaluation data must not move the ranges
    for key, value in scales.items():
        assert torch.equal(qat.state_dict()[key], value), key
    qat.train()
    qat(100 * torch.randn(16, 1, 8, 8))
    assert any(not torch.equal(qat.state_dict()[k], v) for k, v in scales.items())


class _FunctionalAdd(nn.Module):
    def forward(self, x):
        return x + x  # a float add: no quantized kernel for it


class _BadNet(ShrinkNet):
    arch = "bad"

    def __init__(self):
        super().__init__((1, 4, 4), 3)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), _FunctionalAdd())
        self.classifier = nn.Linear(8, 3)


def test_unsupported_layer_is_named_before_training():
    with pytest.raises(QuantizationError, match=r"'features\.2' \(_FunctionalAdd\)"):
        prepare_qat(_BadNet())


def test_model_without_stubs_is_rejected():
    with pytest.raises(QuantizationError, match="QuantStub"):
        prepare_qat(nn.Sequential(nn.Linear(4, 2)), example_input=torch.zeros(1, 4))


def test_converting_without_data_is_refused():
    qat = prepare_qat(create_model("tiny_cnn", input_shape=(1, 8, 8)))
    with pytest.raises(QuantizationError, match=r"observers of 'quant' have seen no data"):
        convert(qat)


def test_bad_inputs():
    model = create_model("tiny_mlp", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="method='int4'"):
        quantize(model, None, "int4")
    with pytest.raises(TypeError, match="QAT trains on a shrinkviz.data.Dataset"):
        quantize(model, torch.zeros(4, 1, 8, 8), "qat")
    with pytest.raises(ValueError, match="calib_batches=0"):
        quantize_ptq(model, torch.zeros(4, 1, 8, 8), calib_batches=0)
    with pytest.raises(QuantizationError, match="already"):
        prepare_qat(prepare_qat(model))
    with pytest.raises(QuantizationError, match="prepare_qat"):
        convert(model)
    with pytest.raises(TypeError, match="calibration data"):
        quantize_ptq(model, 3)


def test_deprecation_noise_is_filtered_only_inside():
    model = create_model("tiny_cnn", input_shape=(1, 8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qat = prepare_qat(model)
        qat(model.example_input(4))
        convert(qat)
    assert [str(w.message) for w in caught] == []
    outside = copy.deepcopy(model).train()
    outside.qconfig = tq.get_default_qat_qconfig("x86")
    with warnings.catch_warnings(record=True) as caught:  # the filter is scoped: direct calls still warn
        warnings.simplefilter("always")
        tq.prepare_qat(outside)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_top_level_verb_is_wired():
    assert sv.quantize is quantize
