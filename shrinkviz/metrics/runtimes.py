"""The runtimes a latency is measured on, and what each one means per dtype.

* ``eager``: the PyTorch module called as is (FP32 kernels, or the INT8 x86 kernels of a converted model).
* ``compiled``: the fastest PyTorch form of the model. FP32: ``torch.compile`` (Inductor, C++/OpenMP
  code generated for the pinned thread count). INT8 (eager-converted): TorchScript ``trace`` + ``freeze``
  (quantized kernels with pre-packed weights and no Python between ops); ``torch.compile`` does not lower
  eager quantized modules, and REFERENCE measured freeze at 2.9 ms vs 5.1 ms eager for ResNet-18.
* ``onnxruntime``: the model exported to ONNX (legacy exporter, opset 17; INT8 as a QDQ graph with the
  model's own scales) and run by an ONNX Runtime CPU session with ``intra_op_num_threads`` pinned.

Example:
    >>> from shrinkviz.models import create_model
    >>> runner = make_runner(create_model("tiny_mlp", input_shape=(1, 8, 8)), "eager", torch.zeros(1, 1, 8, 8), 1)
    >>> runner.call().shape, runner.detail
    (torch.Size([1, 10]), 'PyTorch eager (FP32)')
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

RUNTIMES = ("eager", "compiled", "onnxruntime")


@dataclass
class Runner:
    """One prepared inference: ``call()`` runs the model once on the prepared input."""

    runtime: str
    dtype: str
    detail: str
    call: Callable[[], Any]
    keep: list[Any] = field(default_factory=list)


def model_dtype(model: nn.Module) -> str:
    """``int8`` for a converted INT8 model, ``fp32`` otherwise.

    Raises:
        ValueError: a fake-quant QAT model (its speed says nothing about deployment).
    """
    import torch.ao.nn.quantized as nnq
    from torch.ao.quantization import FakeQuantizeBase

    if any(isinstance(m, FakeQuantizeBase) for m in model.modules()):
        raise ValueError(
            "latency of a fake-quant QAT model is not a deployment figure; convert it to INT8 "
            "first (shrinkviz.quant.convert)"
        )
    return "int8" if any(isinstance(m, nnq.Conv2d | nnq.Linear) for m in model.modules()) else "fp32"


def make_runner(model: nn.Module, runtime: str, x: torch.Tensor, threads: int) -> Runner:
    """Prepare ``model`` for ``runtime`` on input ``x`` (threads must already be pinned for PyTorch).

    Raises:
        ValueError: unknown runtime or a fake-quant model.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime={runtime!r}: valid runtimes are {', '.join(RUNTIMES)}")
    dtype = model_dtype(model)
    model.eval()
    label = dtype.upper()
    if runtime == "eager":
        return Runner(runtime, dtype, f"PyTorch eager ({label})", lambda: model(x))
    if runtime == "compiled":
        if dtype == "int8":
            from shrinkviz.quant.export import torchscript

            frozen = torchscript(model, input_shape=tuple(x.shape[1:]), batch=x.shape[0])
            return Runner(runtime, dtype, "TorchScript trace+freeze (INT8)", lambda: frozen(x), [frozen])
        # one compiled model per measurement: without a reset, dynamo's per-code cache limit would make a
        # sweep over many models silently fall back to eager after a few of them.
        from shrinkviz.quant.export import quiet_trace

        torch._dynamo.reset()
        with (
            quiet_trace()
        ):  # the first torch.compile imports inductor, whose imports use torch.jit.script_method
            compiled = torch.compile(model, dynamic=False)
        return Runner(runtime, dtype, "torch.compile inductor (FP32)", lambda: compiled(x), [compiled])
    import onnxruntime as ort

    from shrinkviz.quant.export import export_onnx, onnx_session

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=tuple(x.shape[1:]), batch=x.shape[0])
        session = onnx_session(path, threads)
    feed = {session.get_inputs()[0].name: x.detach().cpu().contiguous().numpy()}
    form = "QDQ with the model's INT8 scales" if dtype == "int8" else "FP32"
    return Runner(
        runtime,
        dtype,
        f"onnxruntime {ort.__version__} CPU ({form})",
        lambda: session.run(None, feed),
        [session],
    )
