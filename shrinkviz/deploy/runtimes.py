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

from shrinkviz.core.registry import Registry
from shrinkviz.deploy.forms import model_dtype

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


RuntimeFactory = Callable[[nn.Module, torch.Tensor, int, str], Runner]
"""``factory(model, x, threads, dtype) -> Runner``: prepare ``model`` (in eval mode, of ``dtype`` ``fp32`` or
``int8``) to run on input ``x`` with ``threads`` threads."""

RUNTIMES: Registry[RuntimeFactory] = Registry("runtime")
"""Latency runtimes by name (see :func:`register_runtime`)."""


def register_runtime(name: str, factory: RuntimeFactory | None = None, *, overwrite: bool = False) -> Any:
    """Register a latency runtime (usable as a decorator); experiments, sweeps, ``measure_latency``,
    ``compare_latency`` and the figures then accept its name.

    The factory raises ``ValueError`` (or ``ImportError`` when what it needs is not installed) for a model
    it cannot run; the measurement records that reason for this runtime only.

    Example:
        >>> @register_runtime("example_inference_mode", overwrite=True)
        ... def inference_mode(model, x, threads, dtype):
        ...     def call():
        ...         with torch.inference_mode():
        ...             return model(x)
        ...     return Runner("example_inference_mode", dtype, f"PyTorch inference_mode ({dtype.upper()})", call)
        >>> make_runner(nn.Linear(4, 2), "example_inference_mode", torch.zeros(1, 4), 1).detail
        'PyTorch inference_mode (FP32)'
        >>> RUNTIMES.unregister("example_inference_mode")
    """
    if factory is None:
        return lambda fn: register_runtime(name, fn, overwrite=overwrite)
    if not callable(factory):
        raise TypeError(f"runtime {name!r}: factory must be callable(model, x, threads, dtype) -> Runner")
    return RUNTIMES.register(name, factory, overwrite=overwrite)


def available_runtimes() -> list[str]:
    """Names of the registered runtimes, in registration order (the built-ins first)."""
    return RUNTIMES.ordered()


def make_runner(model: nn.Module, runtime: str, x: torch.Tensor, threads: int) -> Runner:
    """Prepare ``model`` for ``runtime`` on input ``x`` (threads must already be pinned for PyTorch).

    Raises:
        ValueError: unknown runtime (did-you-mean) or a fake-quant model.
    """
    factory = RUNTIMES.get(runtime, "runtime")
    dtype = model_dtype(model)
    model.eval()
    return factory(model, x, threads, dtype)


@register_runtime("eager")
def _eager(model: nn.Module, x: torch.Tensor, threads: int, dtype: str) -> Runner:
    return Runner("eager", dtype, f"PyTorch eager ({dtype.upper()})", lambda: model(x))


@register_runtime("compiled")
def _compiled(model: nn.Module, x: torch.Tensor, threads: int, dtype: str) -> Runner:
    from shrinkviz.deploy.export import quiet_trace, torchscript

    if dtype == "int8":
        frozen = torchscript(model, input_shape=tuple(x.shape[1:]), batch=x.shape[0])
        return Runner("compiled", dtype, "TorchScript trace+freeze (INT8)", lambda: frozen(x), [frozen])
    # one compiled model per measurement: without a reset, dynamo's per-code cache limit would make a
    # sweep over many models silently fall back to eager after a few of them.
    torch._dynamo.reset()
    with quiet_trace():  # the first torch.compile imports inductor, whose imports use torch.jit.script_method
        compiled = torch.compile(model, dynamic=False, options=COMPILE_OPTIONS)
    return Runner(
        "compiled", dtype, "torch.compile inductor, freezing (FP32)", lambda: compiled(x), [compiled]
    )


@register_runtime("onnxruntime")
def _onnxruntime(model: nn.Module, x: torch.Tensor, threads: int, dtype: str) -> Runner:
    import onnxruntime as ort

    from shrinkviz.deploy.export import export_onnx, onnx_session

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=tuple(x.shape[1:]), batch=x.shape[0])
        session = onnx_session(path, threads)
    feed = {session.get_inputs()[0].name: x.detach().cpu().contiguous().numpy()}
    form = "QDQ with the model's INT8 scales" if dtype == "int8" else "FP32"
    return Runner(
        "onnxruntime",
        dtype,
        f"onnxruntime {ort.__version__} CPU ({form})",
        lambda: session.run(None, feed),
        [session],
    )


@register_runtime("sparse")
def _sparse(model: nn.Module, x: torch.Tensor, threads: int, dtype: str) -> Runner:
    """Pruned conv / linear layers on the C sparse kernels of :mod:`shrinkviz.sparse` (one thread), each
    layer kept dense where timing says dense is faster; ``Runner.keep`` carries the conversion report."""
    from shrinkviz.sparse import convert

    converted, report = convert(model, x)
    detail = report.summary() + (", kernels single-threaded" if threads > 1 else "")
    return Runner("sparse", report.dtype, detail, lambda: converted(x), [converted, report])
