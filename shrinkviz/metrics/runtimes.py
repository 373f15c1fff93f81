"""The runtimes a latency is measured on, and what each one means per dtype.

* ``eager``: the PyTorch module called as is (FP32 kernels, or the INT8 x86 kernels of a converted model).
* ``compiled``: the fastest PyTorch form of the model. FP32: ``torch.compile`` (Inductor, C++/OpenMP
  code generated for the pinned thread count, weights frozen; see :data:`COMPILE_OPTIONS`). INT8
  (eager-converted): TorchScript ``trace`` + ``freeze`` (quantized kernels with pre-packed weights and
  no Python between ops). ``torch.compile`` cannot trace eager quantized tensors (it graph-breaks on
  "quantized nyi in meta tensors"): on ResNet-18, batch 1, 1 thread it took 12.5 ms of CPU per call vs
  11.5 eager and 5.9 for TorchScript freeze (measured here).
* ``onnxruntime``: the model exported to ONNX (legacy exporter, opset 17; INT8 as a QDQ graph with the
  model's own scales) and run by an ONNX Runtime CPU session with ``intra_op_num_threads`` pinned.
* ``sparse``: pruned conv / linear layers on the C sparse kernels of :mod:`shrinkviz.sparse` (FP32 or INT8,
  one thread), each layer kept dense where timing says dense is faster.

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

RUNTIMES = ("eager", "compiled", "onnxruntime", "sparse")

COMPILE_OPTIONS = {"freezing": True, "layout_optimization": False}
"""Inductor options of the FP32 ``compiled`` runtime. Measured here (CIFAR ResNet-18, batch 1, 1 thread, CPU
time per call, one interleaved run): eager 38.3 ms, default ``torch.compile`` 49.6 ms (its channels-last
layout optimisation is slower at batch 1), without layout optimisation 33.8 ms, plus freezing (constant-
folded, pre-packed weights; the inference setting PyTorch recommends on CPU) 32.8 ms."""


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
    if runtime == "sparse":  # pruned conv / linear layers on C kernels: see shrinkviz.sparse
        from shrinkviz.sparse import make_sparse_runner

        return make_sparse_runner(model, x, threads)
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
            compiled = torch.compile(model, dynamic=False, options=COMPILE_OPTIONS)
        return Runner(runtime, dtype, "torch.compile inductor, freezing (FP32)", lambda: compiled(x), [compiled])
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
