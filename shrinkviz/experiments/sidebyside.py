"""Latency rows of a run: its deployed model timed side by side with the baseline's FP32 model.

Absolute milliseconds on a shared machine move with the machine's state (the same model moved by up to 2x
between runs of one sweep); a ratio taken within one round, where both models saw the same machine, does
not. For every runtime of the experiment's :class:`~shrinkviz.experiments.specs.LatencySpec` the run's model
and the baseline are timed in interleaved rounds (:func:`shrinkviz.metrics.compare.compare_latency`) and
one row of :data:`~shrinkviz.experiments.schema.LATENCY_COLUMNS` is written per runtime: absolute p50 / p90,
``latency_vs_baseline`` with its range over rounds, and the machine. The baseline runs on the same runtime
(``sparse``: on ``eager``, :func:`~shrinkviz.deploy.runtimes.reference_runtime`) unless the spec's
``baseline_runtime`` names one reference for all. The choice ``fastest`` times the model on every installed
runtime against the baseline on ``eager`` (or ``baseline_runtime``) and marks the winner. A runtime that is
not installed or cannot run the model gets a row with only its ``error``; the run does not fail.

Example:
    >>> from shrinkviz.experiments.specs import LatencySpec
    >>> from shrinkviz.models import create_model
    >>> net = create_model("tiny_mlp", input_shape=(1, 8, 8))
    >>> rows = latency_rows(net, net, LatencySpec(rounds=2, warmup=1, min_time_s=0))
    >>> [(r["runtime"], r["baseline_runtime"], r["rounds"], r["error"]) for r in rows]
    [('eager', 'eager', 2, '')]
    >>> cols = run_columns(rows)
    >>> cols["latency_runtime"], cols["latency_vs_baseline"] == rows[0]["latency_vs_baseline"]
    ('eager', True)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from torch import nn

from shrinkviz.core.machine import MACHINE_FIELDS, machine
from shrinkviz.deploy.errors import LatencyError
from shrinkviz.deploy.runtimes import concrete_runtimes, missing_requirement, reference_runtime
from shrinkviz.experiments.schema import LATENCY_COLUMNS

MAX_BLOCKS = 25
"""Interleaved rounds per runtime: ``min(rounds, MAX_BLOCKS)`` (at least 2). Many short rounds: a burst of
load on the shared machine then spoils few of them, and the median over rounds ignores those."""
MIN_BLOCK_S = 0.002
"""Shortest time each model runs per round."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def protocol(spec: Any) -> dict[str, Any]:
    """The :func:`~shrinkviz.metrics.compare.compare_latency` arguments of a latency spec: ``min(rounds, 25)``
    interleaved rounds (at least 2) sharing ``min_time_s`` seconds per model.

    Example:
        >>> from shrinkviz.experiments.specs import LatencySpec
        >>> protocol(LatencySpec(rounds=50, min_time_s=1.0))["blocks"], protocol(LatencySpec())["block_s"]
        (25, 0.04)
    """
    blocks = max(2, min(int(spec.rounds), MAX_BLOCKS))
    return {
        "blocks": blocks,
        "block_s": max(float(spec.min_time_s) / blocks, MIN_BLOCK_S),
        "batch": int(spec.batch),
        "threads": int(spec.threads),
        "warmup": int(spec.warmup),
        "warmup_s": min(0.5, float(spec.min_time_s)),
    }


def _blank(
    run_id: str, runtime: str, spec: Any, sitting: str, at: str, here: dict[str, Any]
) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in LATENCY_COLUMNS}
    row.update(
        run_id=run_id,
        runtime=runtime,
        choice="",
        fastest=False,
        threads=int(spec.threads),
        batch=int(spec.batch),
        measured_at=at,
        sitting=sitting,
        error="",
        **here,
    )
    return row


def _fill(row: dict[str, Any], got: dict[str, Any], base: dict[str, Any], blocks: int) -> None:
    row.update(
        runtime_detail=got["latency_runtime_detail"],
        dtype=got["latency_dtype"],
        latency_ms_p50=got["latency_ms_p50"],
        latency_ms_p90=got["latency_ms_p90"],
        baseline_ms_p50=base["latency_ms_p50"],
        baseline_runtime=base["latency_runtime"],
        latency_vs_baseline=got["latency_vs_reference"],
        latency_vs_baseline_min=got["latency_vs_reference_min"],
        latency_vs_baseline_max=got["latency_vs_reference_max"],
        rounds=blocks,
    )


def latency_rows(
    model: nn.Module,
    baseline: nn.Module,
    spec: Any,
    *,
    run_id: str = "",
    seed: int = 0,
    sitting: str = "run",
    runtimes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Time ``model`` beside ``baseline`` on every runtime of ``spec`` (or ``runtimes``); one row each.

    Args:
        model: the run's deployed model (FP32, pruned or converted INT8).
        baseline: the dense FP32 baseline it is compared with.
        spec: a :class:`~shrinkviz.experiments.specs.LatencySpec` (threads, batch, rounds, warm-up, time).
        run_id: written into each row.
        seed: seed of the random input.
        sitting: ``'run'`` for the timing taken with the run, or a remeasure session id.
        runtimes: overrides ``spec.runtimes``.

    Returns:
        Rows of :data:`LATENCY_COLUMNS`; a runtime that could not be timed has only ``error`` (and the
        conditions) filled.
    """
    return latency_rows_together(
        {run_id: model}, baseline, spec, seed=seed, sitting=sitting, runtimes=runtimes
    )[run_id]


BASELINE_KEY = "\0baseline"
"""The baseline's name among the timed models: no run id can take it (store ids are letters, digits, ``_.-``)."""

TOGETHER = 4
"""Runs timed in one sitting of interleaved rounds with their shared baseline
(:func:`latency_rows_together`). Each round then runs the baseline and up to four models for ``block_s``
each (0.1 s a round with notebook 02's protocol), so every ratio is still taken within a fraction of a
second, and the baseline is warmed up and timed once per four runs instead of once per run: a remeasure
sitting of notebook 02's 105 runs timed the baseline for half of its ~2 s per run."""


def latency_rows_together(
    models: dict[str, nn.Module],
    baseline: nn.Module,
    spec: Any,
    *,
    seed: int = 0,
    sitting: str = "run",
    runtimes: Sequence[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`latency_rows` of several runs that share ``baseline`` and ``spec``: run id -> its rows.

    On every runtime the runs go in groups of :data:`TOGETHER`, each group timed in one sitting of
    interleaved rounds beside the baseline (:func:`shrinkviz.metrics.compare.compare_latency`); a run's
    ratio is taken within each round against the baseline's median of that round, exactly as when it is
    timed alone. The warm-up one pair gets (``2 x min(0.5, min_time_s)`` seconds) is shared by the group,
    each model getting at least ``spec.warmup`` calls. A model that fails on a runtime gets its own error
    row; the others are timed as usual. ``fastest`` times each run on its own (every runtime beside the
    baseline).

    Example:
        >>> from shrinkviz.experiments.specs import LatencySpec
        >>> from shrinkviz.models import create_model
        >>> net = create_model("tiny_mlp", input_shape=(1, 8, 8))
        >>> got = latency_rows_together({"a": net, "b": net}, net, LatencySpec(rounds=2, warmup=1, min_time_s=0))
        >>> {k: [(r["run_id"], r["runtime"], r["error"]) for r in v] for k, v in got.items()}
        {'a': [('a', 'eager', '')], 'b': [('b', 'eager', '')]}
    """
    args = protocol(spec)
    here = {k: v for k, v in machine().items() if k in MACHINE_FIELDS}
    at = _now()
    out: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in models}
    ids = list(models)
    for runtime in spec.runtimes if runtimes is None else runtimes:
        if runtime == "fastest":
            for run_id, model in models.items():
                out[run_id] += _fastest(model, baseline, spec, run_id, seed, sitting, at, here, args)
            continue
        rows = {run_id: _blank(run_id, runtime, spec, sitting, at, here) for run_id in ids}
        for run_id in ids:
            out[run_id].append(rows[run_id])
        reference = spec.baseline_runtime or reference_runtime(runtime)
        missing = missing_requirement(runtime) or missing_requirement(reference)
        if missing:
            for row in rows.values():
                row["error"] = f"ImportError: {missing}"
            continue
        for start in range(0, len(ids), TOGETHER):
            group = ids[start : start + TOGETHER]
            entries = {run_id: (models[run_id], runtime) for run_id in group}
            shared = {**args, "warmup_s": 2 * args["warmup_s"] / (len(entries) + 1)}
            _time_beside(baseline, reference, entries, {r: rows[r] for r in group}, seed, shared)
    return out


def _time_beside(
    baseline: nn.Module,
    reference: str,
    entries: dict[str, tuple[nn.Module, str]],
    rows: dict[str, dict[str, Any]],
    seed: int,
    args: dict[str, Any],
) -> None:
    """Time every entry (name -> (model, runtime)) beside ``baseline`` on ``reference`` in one sitting and
    fill its row: the figures, or why it could not be timed (a row that already has an error keeps it)."""
    from shrinkviz.metrics.compare import compare_latency

    timed = {BASELINE_KEY: (baseline, reference), **entries}
    try:
        got = compare_latency(timed, reference=BASELINE_KEY, seed=seed, on_error="record", **args)
    except (LatencyError, ValueError) as exc:
        for name in entries:
            rows[name]["error"] = rows[name]["error"] or f"{type(exc).__name__}: {exc}"
        return
    base = got[0]
    for result in got[1:]:
        row = rows[result["model"]]
        if result["latency_error"]:
            row["error"] = result["latency_error"]
        else:
            _fill(row, result, base, args["blocks"])


def _fastest(
    model: nn.Module,
    baseline: nn.Module,
    spec: Any,
    run_id: str,
    seed: int,
    sitting: str,
    at: str,
    here: dict[str, Any],
    args: dict[str, Any],
) -> list[dict[str, Any]]:
    """Every installed runtime against the baseline on eager, side by side; the lowest ratio wins."""
    rows = {r: _blank(run_id, r, spec, sitting, at, here) for r in concrete_runtimes()}
    for runtime, row in rows.items():
        row["choice"] = "fastest"
        missing = missing_requirement(runtime)
        if missing:
            row["error"] = f"ImportError: {missing}"
    entries = {r: (model, r) for r, row in rows.items() if not row["error"]}
    _time_beside(baseline, spec.baseline_runtime or "eager", entries, rows, seed, args)
    timed = [r for r in rows.values() if r["latency_vs_baseline"] is not None]
    if timed:
        min(timed, key=lambda r: r["latency_vs_baseline"])["fastest"] = True
    return list(rows.values())


def run_columns(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The runs-table columns of a run's latency rows: the first runtime's figures (for ``fastest``, the
    winner's) in the schema's ``latency_*`` columns; later runtimes as ``latency_ms_p50_<runtime>`` and
    ``latency_vs_baseline_<runtime>``; a runtime without a figure as ``latency_error[_<runtime>]``."""
    out: dict[str, Any] = {}
    groups: list[list[dict[str, Any]]] = []
    for row in rows:
        if row["choice"] and groups and groups[-1][0]["choice"] == row["choice"]:
            groups[-1].append(row)
        else:
            groups.append([row])
    for i, group in enumerate(groups):
        first = group[0]
        winners = [r for r in group if r["fastest"]]
        pick = winners[0] if winners else first
        name = first["choice"] or first["runtime"]
        if i == 0:
            out.update(
                latency_runtime=pick["runtime"] if not pick["error"] else name,
                latency_threads=pick["threads"],
                latency_batch=pick["batch"],
                cpu_model=pick["cpu_model"],
                machine_id=pick["machine_id"],
                cpu_isa=pick["cpu_isa"],
                cpu_cores=pick["cpu_cores"],
                latency_ms_p50=pick["latency_ms_p50"],
                latency_ms_p90=pick["latency_ms_p90"],
                latency_vs_baseline=pick["latency_vs_baseline"],
                latency_vs_baseline_min=pick["latency_vs_baseline_min"],
                latency_vs_baseline_max=pick["latency_vs_baseline_max"],
                latency_dtype=pick["dtype"],
                latency_runtime_detail=pick["runtime_detail"],
                latency_measured_at=pick["measured_at"],
            )
            if first["choice"]:
                out["latency_choice"] = first["choice"]
            if pick["error"] or not winners and first["choice"]:
                out["latency_error"] = pick["error"] or "no runtime could run the model"
            continue
        if pick["error"]:
            out[f"latency_error_{name}"] = pick["error"]
        else:
            out[f"latency_ms_p50_{name}"] = pick["latency_ms_p50"]
            out[f"latency_ms_p90_{name}"] = pick["latency_ms_p90"]
            out[f"latency_vs_baseline_{name}"] = pick["latency_vs_baseline"]
    return out
