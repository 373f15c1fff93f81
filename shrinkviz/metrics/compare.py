"""Latency of several models (or one model on several runtimes) measured side by side.

Example:
    >>> from shrinkviz.models import create_model
    >>> net = create_model("tiny_mlp", input_shape=(1, 8, 8))
    >>> rows = compare_latency({"dense": net, "same": (net, "eager")}, blocks=2, block_s=0.01, warmup=1,
    ...                        warmup_s=0, on_error="record")
    >>> [(r["model"], r["latency_error"], 0 < r["latency_vs_reference_min"] <= r["latency_vs_reference_max"])
    ...  for r in rows]
    [('dense', '', True), ('same', '', True)]
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from shrinkviz.deploy.errors import LatencyError
from shrinkviz.metrics.timing import (
    _checked_shape,
    _prepare_and_probe,
    _row,
    _time_calls,
    _watchdog,
    pinned_threads,
)

ON_ERROR = ("raise", "record")


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
    on_error: str = "raise",
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
        batch, input_shape, threads, warmup, warmup_s, timeout_s, seed: as in
            :func:`shrinkviz.metrics.latency.measure_latency`.
        on_error: ``raise`` (default) or ``record``: a model other than the reference that fails or hangs
            on its runtime gets a row with only ``model``, ``latency_runtime`` and ``latency_error`` (why),
            and the others are timed as usual.

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
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: allowed values: {', '.join(ON_ERROR)}")
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
    errors: dict[str, str] = {}
    with pinned_threads(threads):
        runners = {}
        for name, (m, rt) in entries.items():
            try:
                runners[name] = _watchdog(
                    lambda m=m, rt=rt: _prepare_and_probe(m, rt, x, threads),
                    timeout_s,
                    f"{rt} inference of {name!r} on input {tuple(x.shape)}",
                )
            except LatencyError as exc:
                if on_error == "raise" or name == reference:
                    raise
                errors[name] = f"{type(exc).__name__}: {exc}"
        names = [n for n in names if n not in errors]
        for runner in runners.values():
            _time_calls(runner, warmup, warmup_s, 1, 0, 1)
        for block in range(blocks):
            for name in names[block % len(names) :] + names[: block % len(names)]:  # rotate the order
                t, c = _time_calls(runners[name], 0, 0, 1, block_s, 100_000)
                times[name] += t
                cpu[name] += c
                medians[name].append(statistics.median(t))
    result = []
    for name in models:
        if name in errors:
            result.append({"model": name, "latency_runtime": entries[name][1], "latency_error": errors[name]})
            continue
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
                "latency_error": "",
            }
        )
    return result
