"""Sweeps: cartesian grids of experiments, resumable through the store, run in-process or on Dask.

``sweep(base, **grid)`` expands the grid over any config field (dotted paths such as ``"prune.compression"``
or the aliases of :data:`shrinkviz.experiments.experiment.ALIASES`: ``strategy``, ``compression``, ``order``,
``recipe``, ...), validates every point before anything runs, skips runs already stored (so an interrupted
sweep resumes and a re-run is near instant), runs the rest on an executor and writes each result as it
arrives. A run that raises is stored as ``status='failed'`` with its error and the sweep goes on; failed
runs are tried again by the next sweep.

The module itself is callable, so ``shrinkviz.experiments.sweep(...)`` works whether ``shrinkviz.experiments.sweep`` resolves to
this module or to the function.

Example:
    >>> import tempfile
    >>> import shrinkviz as sv
    >>> base = sv.Experiment(model="tiny_mlp", data={"name": "digits", "train": 256},
    ...                      finetune={"preset": "adam_fast", "epochs": 1},
    ...                      latency={"rounds": 5, "min_time_s": 0})
    >>> store = sv.Store(tempfile.mkdtemp())
    >>> grid = {"strategy": ["global_weight", "random"], "compression": [2, 4]}
    >>> res = sv.sweep(base, store=store, progress=False, **grid)
    >>> res.ran, res.failed, res.runs[["strategy", "compression", "status"]].values.tolist()
    (4, 0, [['global_weight', 2.0, 'ok'], ['global_weight', 4.0, 'ok'],
            ['random', 2.0, 'ok'], ['random', 4.0, 'ok']])
    >>> res.runs["compression_ratio"].round(2).tolist()  # achieved over all parameters, biases included
    [2.0, 4.0, 2.0, 4.0]
    >>> again = sv.sweep(base, store=store, progress=False, **grid)  # everything is stored: nothing reruns
    >>> again.ran, again.skipped, again.runs["run_id"].tolist() == res.runs["run_id"].tolist()
    (0, 4, True)
"""

from __future__ import annotations

import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd

from shrinkviz.core.progress import progress_bar
from shrinkviz.core.verbs import make_module_callable
from shrinkviz.experiments.executors import DaskExecutor, Executor, InProcessExecutor, make_executor
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.leases import Renewer
from shrinkviz.experiments.planning import plan_execution, pretrain, train_baselines_first
from shrinkviz.experiments.preflight import PreflightError, preflight
from shrinkviz.experiments.remeasure import RemeasureError, remeasure
from shrinkviz.experiments.runner import _now, execute, failed_row
from shrinkviz.experiments.schema import FACTOR_COLUMNS, METRIC_COLUMNS
from shrinkviz.experiments.shipping import Shipment, load_plugins
from shrinkviz.experiments.store import SchemaError, Store

__all__ = ["DaskExecutor", "InProcessExecutor", "PreflightError", "SweepResult", "expand", "sweep"]


def _values(key: str, path: str, values: Any) -> list[Any]:
    """The grid values of a key; a scalar is one value, and a flat list of numbers for the list-valued
    ``pipeline.epochs`` is one value (``stage_epochs=[20, 40, 40]``)."""
    if isinstance(values, str | bytes | dict) or not isinstance(values, Iterable):
        return [values]
    if path == "pipeline.epochs" and not any(isinstance(v, Iterable) for v in values):
        return [tuple(values)]
    out = list(values)
    if not out:
        raise ValueError(f"sweep grid {key!r} has no values; give at least one value or drop the key")
    return out


def expand(base: Experiment | Iterable[Experiment], **grid: Any) -> list[Experiment]:
    """Every experiment of ``base`` (one or several) x the cartesian ``grid``, validated, duplicates dropped.

    Raises:
        ValueError: a grid key is not a config field (before any experiment is built), or a grid point is
            an invalid config (naming the field and the point).

    Example:
        >>> base = Experiment(model="tiny_mlp", data="digits")
        >>> [e.label for e in expand(base, strategy=["random"], compression=[2, 4])]
        ['tiny_mlp/digits prune random x2 s0', 'tiny_mlp/digits prune random x4 s0']
    """
    bases = [base] if isinstance(base, Experiment) else list(base)
    if not bases or not all(isinstance(b, Experiment) for b in bases):
        raise TypeError("sweep base must be an Experiment or a non-empty list of Experiments")
    paths = {key: Experiment.resolve_path(key) for key in grid}  # unknown keys fail here, before anything
    clash = [p for p in set(paths.values()) if list(paths.values()).count(p) > 1]
    if clash:
        raise ValueError(
            f"sweep grid sets {clash} twice (through aliases: {[k for k in grid if paths[k] in clash]}); "
            "use one name per field"
        )
    axes = [_values(key, paths[key], values) for key, values in grid.items()]
    out: dict[str, Experiment] = {}
    for b in bases:
        for point in itertools.product(*axes):
            changes = dict(zip(paths.values(), point, strict=True))
            try:
                exp = b.replace(**changes) if changes else b
            except ValueError as exc:
                raise ValueError(f"{exc} (grid point {dict(zip(grid, point, strict=True))})") from exc
            out.setdefault(exp.run_id, exp)
    return list(out.values())


TIME_PARTS = ("train", "eval", "measure", "other")
"""The parts of a run's wall time :meth:`SweepResult.time_split` gives (``<part>_s``, ``<part>_share``)."""


@dataclass
class SweepResult:
    """The runs of one sweep, read from its store (a notebook re-running the sweep gets the same tables).

    Attributes:
        experiments: the sweep's configs in grid order.
        store: where the results are.
        skipped: runs already stored before this call.
        ran: runs executed by this call.
        failed: runs of this call that failed.
        elsewhere: runs another process (a sweep sharing the store) computed while this call waited.
        ran_ids: ids of the runs this call executed, in the order they finished.
        elapsed_s: wall time of this call.
        plan: with ``executor="auto"``, where the runs executed and why (``Plan.describe()``).
        latency_sitting: when runs trained side by side (a cluster with more than one task slot), their
            latency was not timed while other runs trained but afterwards, in this process, in this
            :func:`~shrinkviz.experiments.remeasure.remeasure` sitting ("" when every run timed itself).
    """

    experiments: list[Experiment]
    store: Store
    skipped: int = 0
    ran: int = 0
    failed: int = 0
    elsewhere: int = 0
    elapsed_s: float = 0.0
    ran_ids: list[str] = field(default_factory=list)
    plan: str = ""
    latency_sitting: str = ""
    _ids: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._ids = [e.run_id for e in self.experiments]

    @property
    def run_ids(self) -> list[str]:
        """Run ids in grid order."""
        return list(self._ids)

    @property
    def runs(self) -> pd.DataFrame:
        """One row per run of this sweep (``RUN_COLUMNS`` first), in grid order."""
        return self.store.runs(self._ids)

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch rows of this sweep's runs."""
        return self.store.history(self._ids)

    @property
    def layers(self) -> pd.DataFrame:
        """Per-layer rows of this sweep's runs."""
        return self.store.layers(self._ids)

    def time_split(self) -> pd.DataFrame:
        """Where each ok run's wall time went: one row per run (``run_id``, the factor columns), with
        ``train_s`` (its training epochs less their evaluations), ``eval_s`` (the evaluations inside those
        epochs), ``measure_s`` (measuring the deployed model), ``other_s`` (the rest: loading the data and
        the baseline, or training it when it was not cached, pruning scores, packing the artefact),
        ``duration_s``, and each part's share of it (``train_share`` ...).

        A baseline run's pretraining epochs belong to the cached baseline, not to the run: they are left out.
        Parts a run stored by an older shrinkviz did not record are missing (NaN).

        Example:
            >>> import tempfile
            >>> base = Experiment(model="tiny_mlp", data={"name": "digits", "train": 256},
            ...                   prune={"strategy": "random", "compression": 2},
            ...                   finetune={"preset": "adam_fast", "epochs": 1}, latency={"runtimes": []})
            >>> split = sweep(base, store=Store(tempfile.mkdtemp()), progress=False).time_split()
            >>> run = split.iloc[0]
            >>> bool(run.train_s > 0 and run.eval_s > 0 and run.measure_s > 0 and run.other_s >= 0)
            True
        """
        runs = self.runs[lambda d: d["status"] == "ok"]
        history = self.history[lambda d: d["stage"] != "pretrain"]
        epochs = history.groupby("run_id")[["epoch_s", "eval_s"]].sum(min_count=1)
        out = runs[["run_id", *FACTOR_COLUMNS, "duration_s", "measure_s"]].join(epochs, on="run_id")
        untrained = ~out["run_id"].isin(epochs.index)  # no training stage (a baseline, post-training quant)
        out.loc[untrained, ["epoch_s", "eval_s"]] = 0.0
        out["train_s"] = out["epoch_s"] - out["eval_s"]
        out["other_s"] = out["duration_s"] - out["epoch_s"] - out["measure_s"]
        for part in TIME_PARTS:
            out[f"{part}_share"] = out[f"{part}_s"] / out["duration_s"]
        seconds, shares = ([f"{part}{suffix}" for part in TIME_PARTS] for suffix in ("_s", "_share"))
        return out[["run_id", *FACTOR_COLUMNS, *seconds, "duration_s", *shares]].reset_index(drop=True)

    @property
    def failures(self) -> pd.DataFrame:
        """The failed runs (run_id, label columns and error)."""
        runs = self.runs
        return runs.loc[runs["status"] == "failed", ["run_id", *FACTOR_COLUMNS, "error"]].reset_index(
            drop=True
        )

    def summary(self, by: Sequence[str] | None = None, metrics: Sequence[str] | None = None) -> pd.DataFrame:
        """Mean, std, 95% CI and n over seeds of the ok runs (``shrinkviz.metrics.stats.aggregate``), grouped by
        every factor except ``seed`` unless ``by`` is given."""
        from shrinkviz.metrics.stats import aggregate

        ok = self.runs[lambda d: d["status"] == "ok"]
        by = [c for c in FACTOR_COLUMNS if c != "seed"] if by is None else list(by)
        metrics = [m for m in METRIC_COLUMNS if ok[m].notna().any()] if metrics is None else list(metrics)
        return aggregate(ok, by=by, metrics=metrics)

    def __repr__(self) -> str:
        return (
            f"SweepResult({len(self._ids)} runs: {self.ran} ran ({self.failed} failed), {self.skipped} already "
            f"stored, {self.elsewhere} computed elsewhere; {self.elapsed_s:.1f} s; {self.store})"
        )


def sweep(
    base: Experiment | Iterable[Experiment],
    executor: Executor | str | None = "auto",
    *,
    store: Store | str | os.PathLike[str] | None = None,
    progress: bool = True,
    check: bool = True,
    poll_s: float = 0.5,
    plugins: Sequence[str] = (),
    **grid: Any,
) -> SweepResult:
    """Run ``base`` x ``grid``, skipping what the store already has; return the sweep's tables.

    Args:
        base: an Experiment, or several (each is crossed with the grid; e.g. a baseline, a pruning config
            and a pipeline config swept over seeds together).
        executor: ``"auto"`` (the default: :func:`~shrinkviz.experiments.planning.plan_execution` picks
            in-process or N single-threaded workers from the grid's estimated training time, and the
            choice is kept in ``SweepResult.plan``), None / ``"local"`` (in this process), ``"dask"`` (a
            2-worker LocalCluster), a
            ``"tcp://host:8786"`` scheduler address, or an executor object such as
            ``DaskExecutor(n_workers=4)`` (left open for reuse).
        store: a Store or its folder (default ``Store()``, under the cache root).
        progress: show progress (a bar on a terminal or in Jupyter, else a few lines; see
            :func:`shrinkviz.core.progress.progress_bar`).
        check: run :func:`~shrinkviz.experiments.preflight.preflight` first (store writable with room,
            names registered, data loadable, every model takes its data, every compression reachable).
        poll_s: seconds between looks at runs another sweep is computing (claimed by its lease).
        plugins: modules to import here and on every worker before its runs (registering strategies,
            models, datasets, ...). Registrations made in ``__main__`` (a notebook, the script) need no
            plugin: they are shipped with each run (:mod:`shrinkviz.experiments.shipping`).
        **grid: field (dotted path or alias) -> list of values.

    Returns:
        A :class:`SweepResult` (``.runs``, ``.history``, ``.layers``, ``.summary()``, ``.store``).

    Runs another process has claimed (a sweep over the same store) are left to it: this sweep runs the
    rest, then waits for those and counts them in ``elsewhere``; a run whose holder died is run here.

    Raises:
        ValueError: an unknown grid field or an invalid grid point (nothing has run).
        PreflightError: a ValueError listing every problem found before running (nothing has run).
        ConnectionError: the Dask scheduler is unreachable (nothing has run).

    Example:
        >>> import tempfile
        >>> base = Experiment(model="tiny_mlp", data={"name": "digits", "train": 256},
        ...                   latency={"runtimes": []})
        >>> res = sweep(base, store=Store(tempfile.mkdtemp()), progress=False, seed=[0, 1])
        >>> res.ran, res.runs[["method", "seed", "status"]].values.tolist()
        (2, [['baseline', 0, 'ok'], ['baseline', 1, 'ok']])
        >>> res.store.has(base.replace(seed=1).run_id)
        True
    """
    started = time.perf_counter()
    plugins = load_plugins(plugins)
    experiments = expand(base, **grid)
    if not isinstance(store, Store):
        store = Store(store)
    todo = [e for e in experiments if not store.has(e.run_id)]
    result = SweepResult(experiments, store, skipped=len(experiments) - len(todo))
    if todo and check:
        preflight(todo, store)  # every problem at once, before anything trains or is stored
    if todo:
        if executor == "auto":
            plan = plan_execution(todo)
            result.plan = plan.describe()
            ex, owned = plan.executor(), True
        else:
            ex, owned = make_executor(executor)
        deferred: list[str] = []
        try:
            ex.start()  # connect before anything runs: an unreachable scheduler leaves the store untouched
            # runs side by side would time their models while the others train: leave it to one sitting after
            concurrent = isinstance(ex, DaskExecutor) and ex.slots() > 1
            shipment = None if isinstance(ex, InProcessExecutor) else Shipment.capture(plugins)
            fn = execute if shipment is None else partial(execute, shipment=shipment, latency=not concurrent)
            if isinstance(ex, DaskExecutor) and ex.address is None:
                # workers on this machine share its baseline cache: train each baseline once before the runs
                # (one here with every thread, several side by side on the workers) instead of on one
                # worker's single thread while the others wait for it
                task = partial(pretrain, shipment=shipment)
                train_baselines_first(todo, progress=progress, executor=ex if concurrent else None, task=task)
            bar = progress_bar(len(todo), "sweep", enabled=progress, unit="run")
            stamps = {e.run_id: _stamp(store, e.run_id) for e in todo}
            with Renewer(store.leases):
                while todo:
                    others = _run_claimed(ex, fn, store, todo, result, bar, stamps, deferred)
                    todo = _wait_for_others(store, others, result, bar, poll_s, stamps)
                    stamps.update({e.run_id: _stamp(store, e.run_id) for e in todo})
            bar.close()
        finally:
            if owned:
                ex.close()
        if deferred:
            result.latency_sitting = _time_after_training(store, deferred)
    result.elapsed_s = time.perf_counter() - started
    return result


def _time_after_training(store: Store, run_ids: list[str]) -> str:
    """Time the stored models of ``run_ids`` beside their baselines now that no run trains; return the
    sitting. A failure leaves those runs without latency and says how to time them later."""
    try:
        return remeasure(store, run_ids=run_ids).session
    except (RemeasureError, ValueError, RuntimeError) as exc:
        warnings.warn(
            f"{len(run_ids)} runs trained side by side have no latency yet ({exc}); time them with "
            f"`shrinkviz remeasure --store {store.path}`",
            RuntimeWarning,
            stacklevel=3,
        )
        return ""


def _stamp(store: Store, run_id: str) -> int | None:
    """The record file's mtime (ns), None when absent: a changed stamp means someone stored the run."""
    try:
        return store.file(run_id).stat().st_mtime_ns
    except OSError:
        return None


def _done_since(store: Store, exp: Experiment, stamps: dict[str, int | None]) -> bool:
    """True when the run is stored ok, or another holder stored it (even as failed) since the sweep began."""
    return store.has(exp.run_id) or (
        _stamp(store, exp.run_id) != stamps[exp.run_id] and store.status(exp.run_id) is not None
    )


def _claiming(
    store: Store, todo: list[Experiment], others: list[Experiment], result: SweepResult, stamps: dict
) -> Iterator[str]:
    """Config JSON of each run this process claims, claimed just before it is handed out; runs another
    holder has claimed go to ``others``, runs it stored meanwhile count in ``result.elsewhere``."""
    for exp in todo:
        if not _done_since(store, exp, stamps) and store.leases.claim(exp.run_id):
            if not _done_since(store, exp, stamps):  # not finished elsewhere between the check and the claim
                yield exp.to_json()
                continue
            store.leases.release(exp.run_id)
        if _done_since(store, exp, stamps):
            result.elsewhere += 1
        else:
            others.append(exp)


def _run_claimed(
    ex: Executor,
    fn: Callable[..., Any],
    store: Store,
    todo: list[Experiment],
    result: SweepResult,
    bar: Any,
    stamps: dict,
    deferred: list[str],
) -> list:
    """Run the runs of ``todo`` this process can claim; return those claimed elsewhere. Runs whose
    latency was left for later are added to ``deferred``."""
    by_json = {e.to_json(): e for e in todo}
    others: list[Experiment] = []
    items = _claiming(store, todo, others, result, stamps)
    for config_json, record, error in ex.map_unordered(fn, items, getattr(ex, "torch_threads", None)):
        exp = by_json[config_json]
        if error is not None:  # the worker died, or lacks a registration the config names
            record = {"row": failed_row(exp, error, _now(), 0.0), "history": [], "layers": []}
        try:
            _put(store, exp, record)
        finally:
            store.leases.release(exp.run_id)
        result.ran += 1
        result.ran_ids.append(exp.run_id)
        if record.get("latency_deferred") and record["row"]["status"] == "ok":
            deferred.append(exp.run_id)
        result.failed += record["row"]["status"] != "ok"
        bar.update(1)
        bar.set_postfix(failed=result.failed)
    return others


def _wait_for_others(
    store: Store, others: list[Experiment], result: SweepResult, bar: Any, poll_s: float, stamps: dict
) -> list[Experiment]:
    """Wait while other holders compute ``others``; return the runs whose lease lapsed unfinished."""
    pending = list(others)
    while pending:
        lapsed, still = [], []
        for exp in pending:
            if _done_since(store, exp, stamps):
                result.elsewhere += 1
                bar.update(1)
            elif store.leases.read(exp.run_id) is None:
                lapsed.append(exp)  # its holder died or gave up unfinished: run it here
            else:
                still.append(exp)
        if lapsed:
            return lapsed + still
        pending = still
        if pending:
            time.sleep(poll_s)
    return []


def _put(store: Store, exp: Experiment, record: dict[str, Any]) -> None:
    """Store a record; a record the schema rejects is stored as a failed run naming the problem."""
    try:
        store.put(
            record["row"],
            record["history"],
            record["layers"],
            latency=record.get("latency"),
            artefact=record.get("artefact"),
        )
    except SchemaError as exc:
        row = record["row"]
        store.put(
            failed_row(exp, f"SchemaError: {exc}", row.get("started_at", _now()), row.get("duration_s", 0.0))
        )


make_module_callable(__name__, sweep)  # sv.sweep(...) runs the verb; see shrinkviz.core.verbs
