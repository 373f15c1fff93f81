"""Measured CPU inference latency: median and p90 over many timed rounds, threads pinned, per runtime.

Method (the same for every runtime): threads are pinned (``torch.set_num_threads``, restored after; ONNX
Runtime sessions get ``intra_op_num_threads``); the model is prepared for the runtime and run once in
a watchdog thread, so a failing model raises :class:`LatencyError` and a hanging one
:class:`LatencyTimeoutError` instead of blocking; then ``warmup`` untimed calls (and at least
``warmup_s`` seconds); then every call is timed on its own with ``perf_counter_ns``, garbage
collection paused, for at least ``rounds`` calls and ``min_time_s`` seconds. The median is robust to the
interference of other processes on a shared machine; p90 shows the tail. One call = one batch.

The figures are wall-clock. ``latency_ms_cpu_p50`` is the median CPU time of the process per call (all
its threads): on an idle machine with one thread it equals the wall figure; when other processes
compete for the cores the wall figure rises and the CPU figure does not, which tells a slow model
from a busy machine.

Example:
    >>> from shrinkviz.models import create_model
    >>> row = measure_latency(create_model("tiny_mlp", input_shape=(1, 8, 8)), rounds=20, min_time_s=0)
    >>> row["latency_runtime"], row["latency_threads"], row["latency_batch"], row["latency_ms_p50"] > 0
    ('eager', 1, 1, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shrinkviz.core.machine import cpu_model
from shrinkviz.deploy.errors import LatencyError, LatencyTimeoutError
from shrinkviz.deploy.runtimes import concrete_runtimes
from shrinkviz.metrics.compare import compare_latency
from shrinkviz.metrics.timing import (
    _checked_shape,
    _prepare_and_probe,
    _row,
    _time_calls,
    _watchdog,
    percentile,
    pinned_threads,
)

__all__ = [
    "LatencyError",
    "LatencyTimeoutError",
    "compare_latency",
    "compare_runtimes",
    "cpu_model",
    "latency_metrics",
    "measure_latency",
    "percentile",
    "pinned_threads",
]


def measure_latency(
    model: nn.Module,
    runtime: str = "eager",
    *,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
    threads: int = 1,
    warmup: int = 10,
    warmup_s: float = 0.5,
    rounds: int = 100,
    min_time_s: float = 2.0,
    max_rounds: int = 100_000,
    timeout_s: float = 300.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Median and p90 latency (ms per batch) of ``model`` on ``runtime``, with the conditions recorded.

    Args:
        model: a float (possibly pruned) or converted INT8 model (a fake-quant model is refused).
        runtime: ``eager``, ``compiled`` or ``onnxruntime`` (see :mod:`shrinkviz.deploy.runtimes`).
        batch: inputs per call.
        input_shape: (C, H, W); default ``model.input_shape``.
        threads: intra-op threads, pinned for the measurement and restored after.
        warmup: untimed calls before timing (at least ``warmup_s`` seconds of them).
        warmup_s: minimum warm-up time.
        rounds: minimum timed calls.
        min_time_s: minimum timed duration (more rounds on fast models).
        max_rounds: cap on timed calls.
        timeout_s: limit on preparing the runtime plus the first call (compilation included).
        seed: seed of the random input.

    Returns:
        ``latency_ms_p50``, ``latency_ms_p90``, ``latency_ms_mean``, ``latency_ms_min``, ``latency_ms_cpu_p50``,
        ``latency_runtime``, ``latency_runtime_detail``, ``latency_dtype``, ``latency_threads``,
        ``latency_batch``, ``latency_input_shape``, ``latency_rounds``, ``cpu_model``, ``torch_version``,
        ``onnxruntime_version``.

    Raises:
        ValueError: bad arguments (the field is named) or a fake-quant model.
        LatencyError: the model fails on the runtime; LatencyTimeoutError: it hangs.
    """
    shape = _checked_shape(
        model,
        runtime,
        input_shape,
        batch=batch,
        threads=threads,
        rounds=rounds,
        max_rounds=max_rounds,
        warmup=warmup,
        warmup_s=warmup_s,
        min_time_s=min_time_s,
        timeout_s=timeout_s,
    )
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    what = f"{runtime} inference of {type(model).__name__} on input {tuple(x.shape)}"
    with pinned_threads(threads):
        runner = _watchdog(lambda: _prepare_and_probe(model, runtime, x, threads), timeout_s, what)
        times, cpu = _time_calls(runner, warmup, warmup_s, rounds, min_time_s, max_rounds)
    return _row(runner, runtime, times, cpu, threads, batch, shape)


def compare_runtimes(
    model: nn.Module, runtimes: Sequence[str] | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """:func:`measure_latency` on each runtime (default: every registered concrete one; same batch, shape, threads):
    how much the runtime matters.

    Example:
        >>> from shrinkviz.models import create_model
        >>> rows = compare_runtimes(create_model("tiny_mlp", input_shape=(1, 8, 8)), ["eager", "onnxruntime"],
        ...                         rounds=10, min_time_s=0)
        >>> [r["latency_runtime"] for r in rows]
        ['eager', 'onnxruntime']
    """
    return [measure_latency(model, runtime, **kwargs) for runtime in runtimes or concrete_runtimes()]


def latency_metrics(model: nn.Module, runtime: str = "eager", **kwargs: Any) -> dict[str, Any]:
    """The contract :func:`shrinkviz.metrics.measure` calls: :func:`measure_latency`."""
    return measure_latency(model, runtime, **kwargs)
