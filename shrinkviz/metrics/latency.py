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

import contextlib
import gc
import statistics
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinkviz.core.machine import cpu_model
from shrinkviz.deploy.errors import LatencyError, LatencyTimeoutError
from shrinkviz.deploy.runtimes import RUNTIMES, Runner, available_runtimes, make_runner, model_dtype


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
        "cpu_model": cpu_model(),
        "torch_version": torch.__version__,
        "onnxruntime_version": _ort_version(),
    }


def _prepare_and_probe(model: nn.Module, runtime: str, x: torch.Tensor, threads: int) -> Runner:
    runner = make_runner(model, runtime, x, threads)
    runner.call()
    return runner


def _ort_version() -> str:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return ""


def compare_runtimes(
    model: nn.Module, runtimes: Sequence[str] | None = None, **kwargs: Any
) -> list[dict[str, Any]]:
    """:func:`measure_latency` on each runtime (default: every registered one; same batch, shape, threads):
    how much the runtime matters.

    Example:
        >>> from shrinkviz.models import create_model
        >>> rows = compare_runtimes(create_model("tiny_mlp", input_shape=(1, 8, 8)), ["eager", "onnxruntime"],
        ...                         rounds=10, min_time_s=0)
        >>> [r["latency_runtime"] for r in rows]
        ['eager', 'onnxruntime']
    """
    return [measure_latency(model, runtime, **kwargs) for runtime in runtimes or available_runtimes()]


def compare_latency(
    models: Mapping[str, nn.Module | tuple[nn.Module, str]],
    runtime: str = "eager",
    *,
    reference: str | None = None,
    blocks: int = 10,
    block_s: float = 0.2,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
    threads: int = 1,
    warmup: int = 10,
    warmup_s: float = 0.5,
    timeout_s: float = 300.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Latency of several models measured side by side: interleaved blocks, ratios taken within each block.

    Separate measurements taken minutes apart compare the machine's state as much as the models: on a
    shared VM the same model's median moved by up to 2x between runs of a sweep, with CPU time moving
    with it (the core itself ran slower). Here every model is prepared and warmed up, then timed in
    ``blocks`` rounds; in each round every model (in rotated order) runs for ``block_s`` seconds. A
    model's ratio to ``reference`` is taken within each round, where both saw the same machine, and the
    median over rounds is reported with its range.

    Args:
        models: name -> model (float, pruned, or converted INT8), or name -> ``(model, runtime)`` to time
            that entry on its own runtime; all take the same input shape.
        runtime: one of :data:`RUNTIMES`, for the entries that do not name theirs.
        reference: the name ratios are taken against (default: the first model).
        blocks: interleaved rounds (>= 1).
        block_s: seconds each model runs per round.
        batch, input_shape, threads, warmup, warmup_s, timeout_s, seed: as in :func:`measure_latency`.

    Returns:
        One row per model, in the given order: the :func:`measure_latency` keys over all its timed calls,
        plus ``model``, ``latency_vs_reference`` (median over rounds of its round median / the reference's),
        ``latency_vs_reference_min`` / ``_max`` (the range over rounds), ``latency_reference`` and
        ``latency_blocks``.

    Raises:
        ValueError: no models, an unknown reference, models with different input shapes, bad arguments.
        LatencyError / LatencyTimeoutError: a model fails or hangs on the runtime (named in the message).

    Example:
        >>> from shrinkviz.models import create_model
        >>> net = create_model("tiny_mlp", input_shape=(1, 8, 8))
        >>> rows = compare_latency({"a": net, "b": net}, blocks=2, block_s=0.01, warmup=1, warmup_s=0)
        >>> [(r["model"], r["latency_reference"], r["latency_blocks"]) for r in rows]
        [('a', 'a', 2), ('b', 'a', 2)]
    """
    if not models:
        raise ValueError("models is empty: give a mapping name -> model")
    names = list(models)
    reference = names[0] if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference={reference!r} is not one of the models: {', '.join(names)}")
    if not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"blocks={blocks!r}: must be a whole number >= 1")
    if not block_s > 0:
        raise ValueError(f"block_s={block_s!r}: must be > 0")
    entries = {
        name: value if isinstance(value, tuple) else (value, runtime) for name, value in models.items()
    }
    shapes = {
        name: _checked_shape(
            m,
            rt,
            input_shape,
            batch=batch,
            threads=threads,
            rounds=1,
            max_rounds=1,
            warmup=warmup,
            warmup_s=warmup_s,
            min_time_s=0,
            timeout_s=timeout_s,
        )
        for name, (m, rt) in entries.items()
    }
    if len(set(shapes.values())) != 1:
        raise ValueError(
            "compare_latency needs one input shape for all models, got "
            + ", ".join(f"{n}: {s}" for n, s in shapes.items())
            + " (pass input_shape=)"
        )
    shape = shapes[reference]
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    medians: dict[str, list[float]] = {name: [] for name in names}
    with pinned_threads(threads):
        runners = {
            name: _watchdog(
                lambda m=m, rt=rt: _prepare_and_probe(m, rt, x, threads),
                timeout_s,
                f"{rt} inference of {name!r} on input {tuple(x.shape)}",
            )
            for name, (m, rt) in entries.items()
        }
        for runner in runners.values():
            _time_calls(runner, warmup, warmup_s, 1, 0, 1)
        for block in range(blocks):
            for name in names[block % len(names) :] + names[: block % len(names)]:  # rotate the order
                t, c = _time_calls(runners[name], 0, 0, 1, block_s, 100_000)
                times[name] += t
                cpu[name] += c
                medians[name].append(statistics.median(t))
    result = []
    for name in names:
        ratios = [a / b for a, b in zip(medians[name], medians[reference], strict=True)]
        result.append(
            {
                "model": name,
                **_row(runners[name], entries[name][1], times[name], cpu[name], threads, batch, shape),
                "latency_vs_reference": statistics.median(ratios),
                "latency_vs_reference_min": min(ratios),
                "latency_vs_reference_max": max(ratios),
                "latency_reference": reference,
                "latency_blocks": blocks,
            }
        )
    return result


def latency_metrics(model: nn.Module, runtime: str = "eager", **kwargs: Any) -> dict[str, Any]:
    """The contract :func:`shrinkviz.metrics.measure` calls: :func:`measure_latency`."""
    return measure_latency(model, runtime, **kwargs)
