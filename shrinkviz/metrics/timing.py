"""The timing machinery shared by :mod:`shrinkviz.metrics.latency` and :mod:`shrinkviz.metrics.compare`:
pinned threads, a watchdog around preparing a runtime, timed calls with garbage collection paused, and the
row every measurement returns (with the machine it ran on, :func:`shrinkviz.core.machine.machine`).

Example:
    >>> percentile([1.0, 2.0, 3.0], 50)
    2.0
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinkviz.core.machine import machine
from shrinkviz.deploy.errors import LatencyError, LatencyTimeoutError
from shrinkviz.deploy.runtimes import RUNTIMES, Runner, make_runner, model_dtype


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run with ``torch.set_num_threads(threads)``, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _watchdog(fn: Any, timeout_s: float, what: str) -> Any:
    """Run ``fn()`` in a daemon thread; raise if it raises or does not return within ``timeout_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with torch.inference_mode():
                box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, name="shrinkviz-latency-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise LatencyTimeoutError(f"{what} did not finish within timeout_s={timeout_s}")
    if "error" in box:
        exc = box["error"]
        raise LatencyError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    return box["value"]


def _time_calls(
    runner: Runner, warmup: int, warmup_s: float, rounds: int, min_time_s: float, max_rounds: int
) -> tuple[list[float], list[float]]:
    with torch.inference_mode():
        started = time.perf_counter()
        done = 0
        while done < warmup or time.perf_counter() - started < warmup_s:
            runner.call()
            done += 1
        times: list[float] = []
        cpu: list[float] = []
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            started = time.perf_counter()
            while len(times) < max_rounds and (
                len(times) < rounds or time.perf_counter() - started < min_time_s
            ):
                c0, t0 = time.process_time_ns(), time.perf_counter_ns()
                runner.call()
                t1, c1 = time.perf_counter_ns(), time.process_time_ns()
                times.append((t1 - t0) / 1e6)
                cpu.append((c1 - c0) / 1e6)
        finally:
            if gc_was_enabled:
                gc.enable()
    return times, cpu


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in [0, 100]): ``numpy.percentile`` as a float.

    Example:
        >>> round(percentile([5.0, 1.0, 4.0, 2.0, 3.0], 90), 12), percentile([7.0], 90)
        (4.6, 7.0)
    """
    return float(np.percentile(values, q))


def _checked_shape(
    model: nn.Module, runtime: str, input_shape: tuple[int, ...] | None, *, timeout_s: float, **counts: float
) -> tuple[int, ...]:
    """Validate the arguments of a measurement (each bad one named) and return the input shape (C, H, W)."""
    RUNTIMES.check(runtime, "runtime")
    for name in ("batch", "threads", "rounds", "max_rounds"):
        value = counts[name]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a whole number >= 1")
    for name in ("warmup", "warmup_s", "min_time_s"):
        if counts[name] < 0:
            raise ValueError(f"{name}={counts[name]!r}: must be >= 0")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r}: must be > 0")
    shape = tuple(input_shape) if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"input_shape={shape!r}: must be (channels, height, width), all positive "
            "(pass input_shape= when the model has none)"
        )
    model_dtype(model)  # refuses a fake-quant model before any work
    return shape


def _row(
    runner: Runner,
    runtime: str,
    times: list[float],
    cpu: list[float],
    threads: int,
    batch: int,
    shape: tuple[int, ...],
) -> dict[str, Any]:
    return {
        "latency_ms_p50": statistics.median(times),
        "latency_ms_p90": percentile(times, 90),
        "latency_ms_mean": statistics.fmean(times),
        "latency_ms_min": min(times),
        "latency_ms_cpu_p50": statistics.median(cpu),
        "latency_runtime": runtime,
        "latency_runtime_detail": runner.detail,
        "latency_dtype": runner.dtype,
        "latency_threads": threads,
        "latency_batch": batch,
        "latency_input_shape": "x".join(str(v) for v in shape),
        "latency_rounds": len(times),
        **machine(),
        "torch_version": torch.__version__,
    }


def _prepare_and_probe(model: nn.Module, runtime: str, x: torch.Tensor, threads: int) -> Runner:
    runner = make_runner(model, runtime, x, threads)
    runner.call()
    return runner
