"""One :class:`~shrinkviz.experiments.experiment.Experiment` -> one result row (plus its history and layer tables).

The runner only wires the library's verbs together, in the order the config says: load (or train once
and cache) the pretrained baseline, compress a copy of it (prune + finetune, quantize, distil, or an
ordered pipeline), then ``measure`` the deployed model on the test split. The row carries exactly the
names of :data:`shrinkviz.experiments.schema.RUN_COLUMNS` (extra scalar metrics after them).

Example:
    >>> from shrinkviz.experiments.experiment import Experiment
    >>> exp = Experiment(model="tiny_mlp", data={"name": "digits", "train": 128, "val": 32, "test": 64},
    ...                  baseline={"epochs": 1}, latency={"runtimes": []})
    >>> row, history, layers = run(exp)
    >>> row["method"], row["run_id"] == exp.run_id, row["top1"] == row["baseline_top1"]
    ('baseline', True, True)
    >>> [h["stage"] for h in history], [r["layer"] for r in layers]
    (['pretrain'], ['features.1.linear', 'classifier'])
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from typing import Any

import torch

from shrinkviz.core.version import __version__
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.schema import RUN_COLUMNS
from shrinkviz.experiments.techniques import compress

ERROR_CHARS = 4000
"""Failed runs keep at most this many characters of their traceback in ``error``."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def load_data(exp: Experiment) -> Any:
    """The experiment's dataset, cut to its subset sizes."""
    from shrinkviz.data import load_dataset

    data = load_dataset(exp.data.name, path=exp.data.path or None, val_fraction=exp.data.val_fraction)
    return data.subset(*exp.data.subset) if exp.data.subset else data


def load_baseline(exp: Experiment, progress: bool = False) -> Any:
    """The pretrained baseline of an experiment (trained once and cached by ``shrinkviz.pretrained``)."""
    from shrinkviz.data import load_dataset
    from shrinkviz.loop.zoo import pretrained

    return pretrained(
        exp.model,
        load_dataset(exp.data.name, path=exp.data.path, val_fraction=exp.data.val_fraction)
        if exp.data.path
        else exp.data.name,
        exp.baseline.recipe,
        exp.baseline.seed,
        epochs=exp.baseline.epochs,
        subset=exp.data.subset,
        progress=progress,
        val_fraction=exp.data.val_fraction,
        precision=exp.baseline.precision,
    )


def _latency(exp: Experiment, model: Any, baseline: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Latency per the experiment's protocol, the run's model timed side by side with the baseline on every
    runtime (:func:`shrinkviz.experiments.sidebyside.latency_rows`): the runs-table columns and the
    latency rows. A runtime that cannot run the model leaves its figures missing and says why in
    ``latency_error[_<runtime>]`` and its row's ``error``."""
    from shrinkviz.experiments.sidebyside import latency_rows, run_columns

    if not exp.latency.runtimes:
        return {}, []
    rows = latency_rows(model, baseline, exp.latency, run_id=exp.run_id, seed=exp.seed)
    return run_columns(rows), rows


def _measure(
    exp: Experiment, model: Any, data: Any, baseline: Any, timed: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy (test and val), counts, size and latency (unless not ``timed``) of the deployed model, and
    its latency rows."""
    from shrinkviz.loop.train import validate
    from shrinkviz.metrics import measure
    from shrinkviz.metrics.size import measure_size

    measured = dict(measure(model, data, baseline=baseline, per_example=True))
    measured.update(measure_size(model))
    measured["val_top1"] = validate(model, data)["top1"]  # fit's last validation when it is this model
    columns, latency = _latency(exp, model, baseline) if timed else ({}, [])
    measured.update(columns)
    return measured, latency


def _layer_rows(model: Any, measured: dict[str, Any]) -> list[dict[str, Any]]:
    table = measured.get("layers")
    if table is None:
        from shrinkviz.metrics.counts import layer_rows

        return layer_rows(model)
    return table.to_dict("records") if hasattr(table, "to_dict") else list(table)


def _is_scalar(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, bool | int | float | str)
        or (type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0)
    )


def provenance(exp: Experiment, started_at: str, duration_s: float) -> dict[str, Any]:
    """Identity, provenance and config columns shared by ok and failed rows."""
    from shrinkviz.core.device import default_device

    return {
        "run_id": exp.run_id,
        "status": "ok",
        "error": "",
        "started_at": started_at,
        "finished_at": _now(),
        "duration_s": duration_s,
        "shrinkviz_version": __version__,
        "torch_version": torch.__version__,
        "device": default_device().type,
        "config_json": exp.canonical_json(),
        **exp.factors(),
    }


def run(
    exp: Experiment, *, progress: bool = False, extras: dict[str, Any] | None = None, latency: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Execute one experiment.

    Args:
        exp: the config.
        progress: show training progress bars.
        extras: a dict that receives ``latency`` (the latency rows, see
            :func:`shrinkviz.experiments.sidebyside.latency_rows`), ``artefact`` (the deployed model's
            bytes, :func:`shrinkviz.experiments.artefacts.artefact_bytes`; None where it cannot be packed)
            and ``latency_deferred`` (True when the latency is left to a later sitting).
        latency: time the model now (default). False leaves it to a sitting after the sweep's training
            (:func:`shrinkviz.experiments.remeasure.remeasure` of the stored artefact), so it is not timed
            while other runs train; a model without an artefact is timed now all the same.

    Returns:
        ``(row, history, layers)``: the runs row (every ``RUN_COLUMNS`` name; ``None`` where a quantity
        was not measured, e.g. latency with ``latency.runtimes=[]``), per-epoch rows of the compression
        stages (the pretraining epochs for a baseline run), and per-layer rows of the deployed model.

    Example:
        >>> exp = Experiment(model="tiny_mlp", data={"name": "digits", "train": 128, "val": 32, "test": 64},
        ...                  baseline={"epochs": 1}, prune={"strategy": "random", "compression": 2},
        ...                  finetune={"preset": "adam_fast", "epochs": 1}, latency={"runtimes": []})
        >>> row, history, layers = run(exp)
        >>> row["method"], round(row["compression_ratio"], 2), [h["stage"] for h in history]
        ('prune', 2.0, ['finetune'])
    """
    started_at, t0 = _now(), time.perf_counter()
    data = load_data(exp)
    baseline = load_baseline(exp, progress)
    result = compress(exp, baseline, data, progress)
    model, history = result.model, result.history
    artefact = _artefact(model) if extras is not None else None
    deferred = not latency and artefact is not None and bool(exp.latency.runtimes)
    measuring = time.perf_counter()
    measured, latency_rows = _measure(exp, model, data, baseline, timed=not deferred)
    measure_s = time.perf_counter() - measuring
    if extras is not None:
        extras.update(latency=latency_rows, artefact=artefact, latency_deferred=deferred)
    layers = _layer_rows(model, measured)
    row = provenance(exp, started_at, 0.0)
    manifest_top1 = getattr(baseline, "shrinkviz_manifest", {}).get("metrics", {}).get("test_top1")
    row["baseline_top1"] = manifest_top1
    for key, value in measured.items():
        if (
            key in ("run_id", "status", "error")
            or not _is_scalar(value)
            or (key == "baseline_top1" and value is None)
        ):
            continue
        row[key] = value
    row["finished_at"], row["duration_s"], row["measure_s"] = _now(), time.perf_counter() - t0, measure_s
    row = {
        **{name: row.get(name) for name in RUN_COLUMNS},
        **{k: row[k] for k in sorted(row) if k not in RUN_COLUMNS},
    }
    return row, [{"run_id": exp.run_id, **h} for h in history], [{"run_id": exp.run_id, **r} for r in layers]


def _artefact(model: Any) -> bytes | None:
    from shrinkviz.experiments.artefacts import artefact_bytes

    try:
        return artefact_bytes(model)
    except (ValueError, TypeError, RuntimeError):  # a model that cannot be packed simply has no artefact
        return None


def failed_row(
    exp: Experiment, error: BaseException | str, started_at: str, duration_s: float
) -> dict[str, Any]:
    """The row of a run that raised: status ``failed`` and the error with the end of its traceback."""
    if isinstance(error, BaseException):
        head = f"{type(error).__name__}: {error}"[: ERROR_CHARS // 4]
        trace = "".join(traceback.format_exception(error)).strip()
        room = ERROR_CHARS - len(head) - 5
        text = f"{head}\n{trace if len(trace) <= room else '...' + trace[-room:]}"
    else:
        text = str(error)[:ERROR_CHARS]
    row = provenance(exp, started_at, duration_s)
    row.update(status="failed", error=text or "unknown error")
    return row


def worker_experiment(config_json: str, threads: int | None = None, shipment: Any = None) -> Experiment:
    """What every task a worker gets does first: install the ``shipment`` (plugins and registrations of the
    submitting process), read the config, set torch's intra-op ``threads`` (None: leave as is).

    Raises:
        ValueError: the config names something this worker has no registration for (says which, and how
            to ship it).
    """
    from shrinkviz.experiments.shipping import missing_registration

    if shipment is not None:
        shipment.install()
    try:
        exp = Experiment.from_json(config_json)
    except ValueError as exc:  # valid where it was made: this process lacks one of its registrations
        raise missing_registration(exc) from exc
    if threads:
        torch.set_num_threads(threads)
    return exp


def execute(
    config_json: str,
    threads: int | None = None,
    progress: bool = False,
    shipment: Any = None,
    latency: bool = True,
) -> dict[str, Any]:
    """Worker entry point: run an experiment given as JSON; return ``{row, history, layers, latency,
    artefact}``.

    A failed run is a result (a failed row), except when the worker cannot even read the config: a name
    it has no registration for raises a ValueError saying which and how to ship it.

    Args:
        config_json: ``Experiment.to_json()`` text (plain text travels to any worker).
        threads: torch intra-op threads for this process (None: leave as is).
        progress: show training progress bars.
        shipment: a :class:`shrinkviz.experiments.shipping.Shipment` (plugins and user registrations of the
            submitting process) installed before the config is read.
        latency: False leaves the latency to a later sitting (see :func:`run`); the result's
            ``latency_deferred`` says whether it was.
    """
    exp = worker_experiment(config_json, threads, shipment)
    started_at, t0 = _now(), time.perf_counter()
    extras: dict[str, Any] = {}
    try:
        row, history, layers = run(exp, progress=progress, extras=extras, latency=latency)
    except Exception as exc:  # noqa: BLE001 - a failed run is a result, recorded with its error
        return {
            "row": failed_row(exp, exc, started_at, time.perf_counter() - t0),
            "history": [],
            "layers": [],
            "latency": [],
            "artefact": None,
        }
    return {
        "row": row,
        "history": history,
        "layers": layers,
        "latency": extras.get("latency", []),
        "artefact": extras.get("artefact"),
        "latency_deferred": extras.get("latency_deferred", False),
    }
