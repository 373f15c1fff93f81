"""Deployment forms of a model: ONNX (FP32, or INT8 as a QDQ graph), TorchScript, ONNX Runtime sessions.

INT8 to ONNX keeps the QAT-learned scales: the *converted* eager INT8 model exports with the legacy
(TorchScript-based) exporter into a QDQ graph (QuantizeLinear / DequantizeLinear around Conv, Gemm, Add)
whose scales and zero points are the model's own, and ONNX Runtime fuses it into QLinearConv / QLinearAdd
/ QGemm kernels. (Exporting the fake-quant QAT model instead fails.) ONNX Runtime's own static
quantization (quantize the FP32 export with calibration data) is :func:`quantize_onnx_static`, kept as a
post-training baseline.

Example:
    >>> import tempfile, pathlib
    >>> from shrinkviz.models import create_model
    >>> model = create_model("tiny_mlp", input_shape=(1, 8, 8), seed=0).eval()
    >>> path = export_onnx(model, pathlib.Path(tempfile.mkdtemp()) / "m.onnx")
    >>> session = onnx_session(path)
    >>> session.get_inputs()[0].shape
    ['batch', 1, 8, 8]
    >>> x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), model(x), atol=1e-5)
    True
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from shrinkviz.core.io import atomic_path
from shrinkviz.deploy.onnx_graph import fold_quantized_relus
from shrinkviz.techniques.quant.eager import QuantizationError, is_int8, is_qat

ONNX_OPSET = 17


@contextlib.contextmanager
def quiet_trace() -> Iterator[None]:
    """Silence the warnings of tracing a shrinkviz model (TorchScript trace, legacy ONNX export).

    The legacy exporter and ``torch.jit.trace`` announce their own deprecation (we use them knowingly:
    the legacy exporter is the one that writes INT8 eager models, TorchScript freeze is the fastest
    PyTorch form of an eager INT8 model); the input-shape guard of ``ShrinkNet`` is Python control flow
    that the trace records as a constant, which is what we want for a fixed deployment shape. (torch's own
    modules also call the deprecated ``torch.jit.script_method`` when ``torch.compile`` first imports
    Inductor; that import-time warning is silenced here too.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"You are using the legacy TorchScript-based ONNX export",
            category=DeprecationWarning,
        )
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.(trace|trace_method|freeze|script|script_method|save|load)` is deprecated",
            category=DeprecationWarning,
        )
        warnings.filterwarnings(
            "ignore",
            message=r"Converting a tensor to a Python (boolean|float|integer)",
            category=torch.jit.TracerWarning,
        )
        yield


def _input(model: nn.Module, input_shape: tuple[int, ...] | None, batch: int) -> torch.Tensor:
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} has no input_shape; pass input_shape=(C, H, W)")
    return torch.randn(batch, *shape)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...] | None = None,
    batch: int = 1,
    dynamic_batch: bool = True,
    opset: int = ONNX_OPSET,
    fold_relus: bool = True,
) -> Path:
    """Write ``model`` (FP32, or converted INT8 as a QDQ graph) to an ONNX file, atomically.

    Uses the legacy exporter (``dynamo=False``) at opset 17: it handles both float and eager INT8 models.

    Args:
        model: a float model or a converted INT8 model (a fake-quant QAT model is refused).
        path: destination file.
        input_shape: (C, H, W); default ``model.input_shape``.
        batch: batch of the example used for tracing.
        dynamic_batch: declare the batch dimension dynamic.
        opset: ONNX opset.
        fold_relus: for INT8 models, fold the quantize/relu/dequantize round trip after residual adds
            into the quantizer (:func:`shrinkviz.deploy.onnx_graph.fold_quantized_relus`; same values,
            lets ONNX Runtime fuse the add).

    Raises:
        QuantizationError: a QAT model that has not been converted.
    """
    if is_qat(model):
        raise QuantizationError(
            "export the converted model: shrinkviz.techniques.quant.convert(qat_model) first "
            "(fake-quant ops are not exportable)"
        )
    x = _input(model, input_shape, batch)
    was_training = model.training
    model.eval()
    dynamic = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    try:
        with atomic_path(path) as tmp, quiet_trace(), torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes=dynamic,
            )
            if fold_relus and is_int8(model):
                graph = onnx.load(str(tmp))
                if fold_quantized_relus(graph):
                    onnx.save(graph, str(tmp))
    finally:
        model.train(was_training)
    return Path(path)


def torchscript(
    model: nn.Module, *, input_shape: tuple[int, ...] | None = None, batch: int = 1
) -> torch.jit.ScriptModule:
    """Trace and freeze a model (the fastest PyTorch form of an eager INT8 model: quantized ops with
    pre-packed weights and no Python between them).

    Example:
        >>> from shrinkviz.models import create_model
        >>> m = create_model("tiny_mlp", input_shape=(1, 8, 8)).eval()
        >>> x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> scripted = torchscript(m)
        >>> isinstance(scripted, torch.jit.ScriptModule), torch.allclose(scripted(x), m(x), atol=1e-6)
        (True, True)
    """
    x = _input(model, input_shape, batch)
    model.eval()
    with quiet_trace(), torch.no_grad():
        traced = torch.jit.trace(model, (x,), check_trace=False)
        return torch.jit.freeze(traced.eval())


def onnx_session(path: str | os.PathLike[str], threads: int = 1):
    """An ONNX Runtime CPU session pinned to ``threads`` intra-op threads (sequential, all optimisations).

    Returns:
        ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize_onnx_static(
    fp32_path: str | os.PathLike[str],
    path: str | os.PathLike[str],
    calibration: torch.Tensor | Iterable[torch.Tensor],
    *,
    per_channel: bool = True,
) -> Path:
    """ONNX Runtime post-training static quantization of an FP32 ONNX file (QDQ, per-channel int8
    weights, uint8 activations, MinMax calibration): the post-training baseline to compare QAT with.

    Args:
        fp32_path: an FP32 model from :func:`export_onnx`.
        path: destination of the INT8 QDQ model (written atomically).
        calibration: input batches (normalised like the training data), or one tensor of inputs.
        per_channel: per-output-channel weight scales.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = ({"input": b.detach().cpu().numpy().astype(np.float32)} for b in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as work, atomic_path(path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(
            str(fp32_path), str(prepared)
        )  # shape inference + graph optimisation, as ORT advises
        quantize_static(
            str(prepared),
            str(tmp),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return Path(path)
