"""Re-time every stored artefact of a store in one sitting, side by side with its baseline.

Each run's deployed model is rebuilt from its stored artefact (:mod:`shrinkviz.experiments.artefacts`) and
timed in interleaved rounds beside the FP32 baseline it was compressed from
(:func:`shrinkviz.experiments.sidebyside.latency_rows_together`). Runs sharing a baseline are timed with
that baseline loaded once, up to :data:`~shrinkviz.experiments.sidebyside.TOGETHER` of them in one sitting
of interleaved rounds beside it. The new rows are appended to each run's latency table (earlier
sittings are kept, told apart by ``sitting``, ``measured_at`` and the machine columns) and the runs table's
``latency_*`` columns take the newest figures of the first runtime.

Example:
    >>> import tempfile
    >>> remeasure(tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    RemeasureError: the store ... has no runs: run a sweep into it first (shrinkviz sweep / shrinkviz demo)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkviz.core.machine import machine_id
from shrinkviz.deploy.runtimes import RUNTIMES, missing_requirement
from shrinkviz.experiments.artefacts import ArtefactError
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.schema import LATENCY_COLUMNS
from shrinkviz.experiments.sidebyside import TOGETHER, latency_rows_together, run_columns
from shrinkviz.experiments.specs import LatencySpec
from shrinkviz.experiments.store import Store


class RemeasureError(ValueError):
    """Nothing to re-time, or a bad request; nothing was written."""


@dataclass
class RemeasureResult:
    """What one sitting did: the new latency rows, the session id, runs skipped (with why), wall time."""

    latency: pd.DataFrame
    session: str
    skipped: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        """New latency rows per second of wall time."""
        return len(self.latency) / self.wall_s if self.wall_s > 0 else 0.0


def check_runtimes(runtimes: Sequence[str]) -> tuple[str, ...]:
    """The runtimes asked for, each registered (did-you-mean otherwise) and installed (else the pip command).

    Raises:
        ValueError: the first bad name, with the fix.

    Example:
        >>> check_runtimes(["eager"])
        ('eager',)
        >>> check_runtimes(["eagr"])  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UnknownNameError: unknown runtime 'eagr'; did you mean 'eager'? ...
    """
    if isinstance(runtimes, str):
        runtimes = [runtimes]
    out = []
    for name in runtimes:
        RUNTIMES.check(name, "runtime")
        missing = missing_requirement(name)
        if missing:
            raise ValueError(missing)
        out.append(name)
    if not out:
        raise ValueError("runtimes is empty: name at least one runtime (e.g. eager) or leave it unset")
    return tuple(out)


def _open(store: Store | str | os.PathLike[str]) -> Store:
    path = Path(store.path if isinstance(store, Store) else store).expanduser()
    if path.exists() and not path.is_dir():
        raise RemeasureError(f"{path} is a file, not a store folder: pass the folder a sweep wrote into")
    runs = path / "runs"
    if not runs.is_dir():
        if path.is_dir() and any(path.iterdir()):
            raise RemeasureError(
                f"{path} is not a shrinkviz store (it has no runs/ folder of run records): pass the folder "
                "a sweep or shrinkviz demo wrote into"
            )
        raise RemeasureError(
            f"the store {path} has no runs: run a sweep into it first (shrinkviz sweep / shrinkviz demo)"
        )
    opened = store if isinstance(store, Store) else Store(path)
    if not opened.run_ids():
        if opened.problems or any(runs.glob("*.json")):
            raise RemeasureError(
                f"{path} holds no readable shrinkviz run records ({len(opened.problems)} unreadable files): "
                "pass the folder a sweep or shrinkviz demo wrote into"
            )
        raise RemeasureError(
            f"the store {path} has no runs: run a sweep into it first (shrinkviz sweep / shrinkviz demo)"
        )
    return opened


@dataclass(frozen=True)
class _Stored:
    """What re-timing needs of a stored run, read from its config without rebuilding the Experiment: a
    run may name datasets, models or techniques registered only in the session that ran it (a notebook)."""

    config: dict[str, Any]
    latency: LatencySpec
    method: str
    seed: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Stored:
        config = json.loads(row["config_json"])
        return cls(
            config, LatencySpec.from_dict(config.get("latency", {})), str(row["method"]), int(row["seed"])
        )

    def baseline_key(self) -> str:
        """What identifies the baseline a run was compressed from: its model, data and baseline sections
        (recipe, seed and epochs; dataset, subset sizes and split)."""
        return json.dumps([self.config.get(k) for k in ("model", "data", "baseline")], sort_keys=True)

    def experiment(self) -> Experiment:
        """The full Experiment (needed only to rebuild a baseline that is not stored as a run)."""
        try:
            return Experiment.from_dict(self.config)
        except ValueError as exc:
            raise RemeasureError(
                f"the store has no baseline run for this group and its config does not load here ({exc}); "
                "register what the runs used (or import the module that does) before remeasuring"
            ) from None


def _spec(run: _Stored, runtimes: tuple[str, ...] | None, changes: dict[str, Any]) -> Any:
    if runtimes is not None:
        changes = {**changes, "runtimes": runtimes}
    return dataclasses.replace(run.latency, **changes) if changes else run.latency


def remeasure(
    store: Store | str | os.PathLike[str],
    runtimes: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    batch: int | None = None,
    rounds: int | None = None,
    min_time_s: float | None = None,
    run_ids: Sequence[str] | None = None,
) -> RemeasureResult:
    """Re-time every stored artefact of ``store`` (or ``run_ids``) beside its baseline; append the rows.

    Args:
        store: a :class:`Store` or its folder.
        runtimes: runtimes to time on (default: each run's own latency spec); ``fastest`` allowed.
        threads, batch, rounds, min_time_s: override each run's latency spec (validated like it).
        run_ids: only these runs.

    Returns:
        A :class:`RemeasureResult`; its ``latency`` holds the rows appended in this sitting.

    Raises:
        RemeasureError: an empty or foreign store, or no run with an artefact; ValueError: an unknown or
            uninstalled runtime, or a bad spec value. Nothing is written in either case.
    """
    started = time.perf_counter()
    chosen = None if runtimes is None else check_runtimes(runtimes)
    changes = {
        k: v
        for k, v in {"threads": threads, "batch": batch, "rounds": rounds, "min_time_s": min_time_s}.items()
        if v is not None
    }
    opened = _open(store)
    runs = opened.runs(run_ids)
    skipped: dict[str, str] = {}
    work: dict[str, list[tuple[_Stored, Any]]] = {}
    specs = {}
    for row in runs.to_dict("records"):
        run_id = row["run_id"]
        if row["status"] != "ok":
            skipped[run_id] = "failed run"
            continue
        if not opened.get(run_id).artefact:
            skipped[run_id] = "no stored artefact (written before artefacts were kept)"
            continue
        stored = _Stored.of(row)
        specs[run_id] = _spec(stored, chosen, changes)  # validates threads / rounds before anything runs
        if not specs[run_id].runtimes:
            skipped[run_id] = "its latency spec has no runtimes (pass runtimes=)"
            continue
        work.setdefault(stored.baseline_key(), []).append((stored, row))
    if not work:
        raise RemeasureError(
            f"no run in {opened.path} can be re-timed ({len(skipped)} skipped: "
            f"{', '.join(sorted(set(skipped.values()))) or 'none'}): re-run the sweep with force=True to store artefacts"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    session = f"remeasure-{stamp}-{machine_id()}"
    new_rows: list[dict[str, Any]] = []
    for group in work.values():
        baseline = _group_baseline(opened, group)
        # runs with the same spec and input seed are timed together, TOGETHER artefacts loaded at a time
        alike: dict[str, list[tuple[_Stored, dict[str, Any]]]] = {}
        for stored, row in group:
            alike.setdefault(repr((specs[row["run_id"]], stored.seed)), []).append((stored, row))
        for runs_alike in alike.values():
            for start in range(0, len(runs_alike), TOGETHER):
                new_rows += _time_together(
                    opened, baseline, runs_alike[start : start + TOGETHER], specs, session, skipped
                )
    table = pd.DataFrame(new_rows, columns=list(LATENCY_COLUMNS))
    return RemeasureResult(table, session, skipped, time.perf_counter() - started)


def _time_together(
    store: Store,
    baseline: Any,
    runs: list[tuple[_Stored, dict[str, Any]]],
    specs: dict[str, Any],
    session: str,
    skipped: dict[str, str],
) -> list[dict[str, Any]]:
    """Load these runs' artefacts, time them beside ``baseline`` in one sitting, store each run's rows."""
    models = {}
    for _, row in runs:
        try:
            models[row["run_id"]] = store.artefact(row["run_id"])
        except (ArtefactError, KeyError) as exc:  # this run only: the others are still re-timed
            skipped[row["run_id"]] = f"artefact not loadable: {exc}"
    if not models:
        return []
    stored, first = runs[0]
    got = latency_rows_together(models, baseline, specs[first["run_id"]], seed=stored.seed, sitting=session)
    for run_id, rows in got.items():
        store.add_latency(run_id, rows, run_columns(rows))
    return [row for rows in got.values() for row in rows]


def _group_baseline(store: Store, group: list[tuple[_Stored, dict[str, Any]]]) -> Any:
    """The group's FP32 baseline: a stored baseline run's artefact, else the pretrained zoo's copy."""
    for stored, row in group:
        if stored.method == "baseline":
            return store.artefact(row["run_id"])
    key = group[0][0].baseline_key()
    for row in store.runs().to_dict("records"):  # a baseline run outside the selected run_ids
        if row["status"] == "ok" and row["method"] == "baseline" and _Stored.of(row).baseline_key() == key:
            return store.artefact(row["run_id"])
    from shrinkviz.experiments.runner import load_baseline

    return load_baseline(group[0][0].experiment()).eval()
