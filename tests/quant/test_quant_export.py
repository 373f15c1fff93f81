"""Deployment forms: ONNX (FP32, INT8 QDQ carrying the model's own scales), ONNX Runtime static
quantization baseline, TorchScript."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from shrinkviz.data import Normalizer, batches
from shrinkviz.deploy.export import export_onnx, onnx_session, quantize_onnx_static, torchscript
from shrinkviz.models import create_model
from shrinkviz.techniques.quant import QuantizationError, prepare_qat, quantize, quantize_ptq


@pytest.fixture(scope="module")
def int8_cnn(trained_cnn, digits):
    return quantize(trained_cnn, digits, "ptq", calib_batches=4).model


def _input_scale(model) -> float:
    """The scale the INT8 model quantizes its input with (graph mode: the first quantize_per_tensor)."""
    node = next(n for n in model.graph.nodes if n.target is torch.quantize_per_tensor)
    return float(getattr(model, node.args[1].target))


def _test_inputs(data, n=256):
    x, y = next(batches(data.test, n, Normalizer(data.mean, data.std), torch.device("cpu")))
    return x, y


def test_int8_onnx_is_qdq_with_the_models_scales(int8_cnn, digits, tmp_path):
    path = export_onnx(int8_cnn, tmp_path / "int8.onnx")
    ops = Counter(node.op_type for node in onnx.load(path).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Conv"] == 6
    # the input QuantizeLinear uses the scale the INT8 model learned for its input
    graph = onnx.load(path).graph
    consts = {
        n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in graph.node
        if n.op_type == "Constant"
    }
    consts.update({t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer})
    aliases = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear")
    assert float(consts[aliases.get(first_q.input[1], first_q.input[1])]) == pytest.approx(
        _input_scale(int8_cnn), rel=1e-6
    )
    x, _ = _test_inputs(digits)
    ort_out = onnx_session(path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        eager = int8_cnn(x).numpy()
    agree = float((ort_out.argmax(1) == eager.argmax(1)).mean())
    assert agree >= 0.98  # same int8 graph; kernels may round a tie differently
    assert float(np.abs(ort_out - eager).max()) < 0.1 * float(np.abs(eager).max())


def test_fp32_onnx_matches_eager(trained_cnn, digits, tmp_path):
    path = export_onnx(trained_cnn, tmp_path / "fp32.onnx")
    x, _ = _test_inputs(digits, 64)
    out = onnx_session(path, threads=1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), trained_cnn(x), rtol=1e-4, atol=1e-4)


def test_onnxruntime_static_quantization_baseline(trained_cnn, digits, tmp_path):
    fp32 = export_onnx(trained_cnn, tmp_path / "fp32.onnx")
    calib = [
        x for x, _ in batches(digits.train, 64, Normalizer(digits.mean, digits.std), torch.device("cpu"))
    ][:4]
    path = quantize_onnx_static(fp32, tmp_path / "int8_static.onnx", calib)
    ops = Counter(node.op_type for node in onnx.load(path).graph.node)
    assert ops["QuantizeLinear"] > 0
    x, y = _test_inputs(digits)
    pred = onnx_session(path).run(None, {"input": x.numpy()})[0].argmax(1)
    with torch.no_grad():
        ref = trained_cnn(x).argmax(1).numpy()
    assert float((pred == ref).mean()) >= 0.95


def test_torchscript_int8_matches_eager_exactly(int8_cnn, digits):
    frozen = torchscript(int8_cnn)
    x, _ = _test_inputs(digits, 32)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), int8_cnn(x), rtol=0, atol=0)


def test_fake_quant_model_is_not_exported(tmp_path):
    qat = prepare_qat(create_model("tiny_mlp", input_shape=(1, 8, 8)))
    with pytest.raises(QuantizationError, match="convert"):
        export_onnx(qat, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_needs_an_input_shape(tmp_path):
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")


def test_relu_after_residual_add_is_folded_into_the_quantizer(int8_cnn, trained_cnn, digits, tmp_path):
    def dequantized_relus(path):
        graph = onnx.load(path).graph
        producers = {out: node.op_type for node in graph.node for out in node.output}
        return sum(n.op_type == "Relu" and producers[n.input[0]] == "DequantizeLinear" for n in graph.node)

    # graph mode fuses add + relu into one quantized op: nothing to fold in what quantize() returns
    assert dequantized_relus(export_onnx(int8_cnn, tmp_path / "graph.onnx", fold_relus=False)) == 0
    eager_int8 = quantize_ptq(trained_cnn, digits, calib_batches=4)  # the eager-mode artefact has the pattern
    raw = export_onnx(eager_int8, tmp_path / "raw.onnx", fold_relus=False)
    folded = export_onnx(eager_int8, tmp_path / "folded.onnx")
    assert dequantized_relus(raw) == 2  # the two residual blocks of tiny_cnn
    assert dequantized_relus(folded) == 0
    x, _ = _test_inputs(digits)
    a = onnx_session(raw).run(None, {"input": x.numpy()})[0]
    b = onnx_session(folded).run(None, {"input": x.numpy()})[0]
    np.testing.assert_array_equal(a, b)  # same values: zero point 0 clamps exactly like the ReLU
