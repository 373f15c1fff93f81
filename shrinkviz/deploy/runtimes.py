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
* ``openvino``: the same ONNX file (FP32, or the INT8 QDQ graph, which OpenVINO runs with INT8 kernels)
  compiled by OpenVINO for the CPU with the latency hint and ``INFERENCE_NUM_THREADS`` pinned.
* ``sparse``: pruned layers on the C sparse kernels of :mod:`shrinkviz.sparse`.
* ``fastest``: a choice, not a runtime of its own: every other installed runtime is prepared and timed
  briefly side by side and the fastest one runs (``Runner.detail`` names it and ``Runner.keep[-1]`` holds
  each runtime's median). Experiments time all of them against the baseline and record each one.

A runtime that needs a package names it in :data:`REQUIRES`; :func:`missing_requirement` gives the pip
command that installs it.

Example:
    >>> from shrinkviz.models import create_model
    >>> runner = make_runner(create_model("tiny_mlp", input_shape=(1, 8, 8)), "eager", torch.zeros(1, 1, 8, 8), 1)
    >>> runner.call().shape, runner.detail
    (torch.Size([1, 10]), 'PyTorch eager (FP32)')
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
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


REQUIRES: dict[str, str] = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
"""runtime -> the importable package (and PyPI distribution) it needs."""

CHOICES: tuple[str, ...] = ("fastest",)
"""Registered names that choose among the other runtimes rather than run a model themselves."""


def missing_requirement(runtime: str) -> str | None:
    """None when ``runtime`` can run here, else a one-line reason with the pip command that installs it.

    Example:
        >>> missing_requirement("eager") is None
        True
    """
    package = REQUIRES.get(runtime)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return (
        f"runtime {runtime!r} needs the {package} package, which is not installed: "
        f"pip install -c constraints.txt {package}"
    )


REFERENCE_RUNTIME: dict[str, str] = {"sparse": "eager"}
"""runtime -> the runtime its dense reference (the baseline) is timed on, for runtimes that cannot run a dense
model: ``sparse`` refuses a model without zero weights, and a dense layer it keeps runs as on ``eager``."""


def reference_runtime(runtime: str) -> str:
    """The runtime the dense baseline is timed on beside a run timed on ``runtime``.

    Example:
        >>> reference_runtime("onnxruntime"), reference_runtime("sparse")
        ('onnxruntime', 'eager')
    """
    return REFERENCE_RUNTIME.get(runtime, runtime)


def reference_runtimes() -> list[str]:
    """The runtimes a dense baseline can be timed on (every concrete runtime but those of
    :data:`REFERENCE_RUNTIME`)."""
    return [r for r in concrete_runtimes() if r not in REFERENCE_RUNTIME]


def concrete_runtimes(installed_only: bool = False) -> list[str]:
    """The registered runtimes that run a model themselves (not :data:`CHOICES`), optionally only those whose
    packages are installed."""
    return [
        r
        for r in available_runtimes()
        if r not in CHOICES and not (installed_only and missing_requirement(r))
    ]


def make_runner(model: nn.Module, runtime: str, x: torch.Tensor, threads: int) -> Runner:
    """Prepare ``model`` for ``runtime`` on input ``x`` (threads must already be pinned for PyTorch).

    Raises:
        ValueError: unknown runtime (did-you-mean) or a fake-quant model.
    """
    factory = RUNTIMES.get(runtime, "runtime")
    dtype = model_dtype(model)
    model.eval()
    if dtype == "int8":
        model = fresh_int8(model)
    return factory(model, x, threads, dtype)


def fresh_int8(model: nn.Module) -> nn.Module:
    """A copy of a converted INT8 model with its weights packed anew and never called.

    PyTorch's x86 quantized kernels settle how they run a layer at its first call, for the thread count of
    that call, and keep it: an INT8 MnistNet first called with 2 threads (the check that follows conversion
    in a sweep) then ran 40% slower at 1 thread (0.28 vs 0.20 ms per call, measured here) than the same
    weights first called at 1 thread. ``copy.deepcopy`` re-packs every quantized conv / linear, so a runner
    built on the copy makes its first call under the pinned threads, whatever ran the model before.

    Example:
        >>> from shrinkviz.models import create_model
        >>> from shrinkviz.techniques.quant.graph import calibrate_graph
        >>> net = create_model("tiny_cnn", input_shape=(1, 8, 8)).eval()
        >>> q = calibrate_graph(net, torch.randn(16, 1, 8, 8), torch.randn(2, 1, 8, 8), calib_batches=1)
        >>> copy_ = fresh_int8(q)
        >>> copy_ is not q and torch.equal(copy_(torch.ones(1, 1, 8, 8)), q(torch.ones(1, 1, 8, 8)))
        True
    """
    import copy

    return copy.deepcopy(model)


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


@register_runtime("openvino")
def _openvino(model: nn.Module, x: torch.Tensor, threads: int, dtype: str) -> Runner:
    """The ONNX export (INT8: the QDQ graph with the model's scales) compiled by OpenVINO for the CPU."""
    missing = missing_requirement("openvino")
    if missing:
        raise ImportError(missing)
    import openvino as ov

    from shrinkviz.deploy.export import export_onnx

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", input_shape=tuple(x.shape[1:]), batch=x.shape[0])
        compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "INFERENCE_PRECISION_HINT": "f32",  # no silent bf16 on CPUs that have it
            },
        )
    request = compiled.create_infer_request()
    feed = x.detach().cpu().contiguous().numpy()
    form = "QDQ with the model's INT8 scales" if dtype == "int8" else "FP32"

    def call() -> Any:
        request.infer({0: feed})
        return request.get_output_tensor(0).data

    return Runner("openvino", dtype, f"OpenVINO {ov.__version__} CPU ({form})", call, [compiled, request])


FASTEST_PROBE_S = 0.05
"""Seconds each runtime runs per round when ``fastest`` picks one (3 interleaved rounds)."""


@register_runtime("fastest")
def _fastest(model: nn.Module, x: torch.Tensor, threads: int, dtype: str) -> Runner:
    runners: dict[str, Runner] = {}
    reasons: dict[str, str] = {}
    for runtime in concrete_runtimes():
        try:
            runner = RUNTIMES.get(runtime)(model, x, threads, dtype)
            runner.call()
            runners[runtime] = runner
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the model is not a candidate
            reasons[runtime] = f"{type(exc).__name__}: {exc}"
    if not runners:
        raise ValueError(
            "no runtime could run the model: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())
        )
    medians: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for _ in range(3):
            for name, runner in runners.items():
                times, started = [], time.perf_counter()
                while not times or time.perf_counter() - started < FASTEST_PROBE_S:
                    t0 = time.perf_counter()
                    runner.call()
                    times.append(time.perf_counter() - t0)
                medians[name].append(statistics.median(times))
    best = {name: statistics.median(m) * 1e3 for name, m in medians.items()}
    winner = min(best, key=best.get)
    won = runners[winner]
    others = ", ".join(f"{k} {v:.3g} ms" for k, v in best.items())
    return Runner("fastest", won.dtype, f"fastest: {winner} ({others})", won.call, [*won.keep, best])
