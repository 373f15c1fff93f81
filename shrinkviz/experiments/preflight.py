"""Checks a sweep runs before any training: the store, free space, registrations, and every grid point.

:func:`preflight` collects every problem it finds and raises them together in one :class:`PreflightError`,
grouped by cause with the number of runs each affects, so a grid with one bad value fails at once, before
anything is trained or stored (an infeasible point is refused, never stored as a failed run).

What is checked:

- the store: a directory (folders missing are created for the probe, then removed again) where a probe
  file can be written, fsynced and removed, with free space for the records to come (:data:`RECORD_BYTES`
  per run);
- the cache root: free space for the baselines to train (4 bytes per parameter, twice, per baseline);
- registrations: every model, dataset, pruning strategy and latency runtime name is registered;
- the data: every dataset loads (files present and verified) - in this process;
- every (model, data shape) pair: the model is built on the CPU and takes one zero image of the data's
  input shape, giving one logit per class (its weights live only for the check; the ``meta`` device would
  save that memory but its convolution shape checks import sympy and ``torch._dynamo``, 77 MiB that stayed
  in the sweep's process for good);
- every compression target: reachable for the model (``keep_budget`` of the pruning code).

Models and datasets are checked once per (model, input shape, classes) and dataset name.

Example:
    >>> import tempfile
    >>> from shrinkviz.experiments.experiment import Experiment
    >>> from shrinkviz.experiments.store import Store
    >>> exps = [Experiment(model=m, data="digits") for m in ("tiny_mlp", "mnistnet")]
    >>> try:
    ...     preflight(exps, Store(tempfile.mkdtemp()))
    ... except PreflightError as exc:
    ...     print(exc.problems[0].split(':')[0])
    model 'mnistnet' cannot take digits's input (1, 8, 8)
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from shrinkviz.core.registry import unknown_name
from shrinkviz.experiments.experiment import Experiment

RECORD_BYTES = 256 * 1024
"""Free space reserved per run in the store (a record with its history and layer tables; typically
10-60 KiB, so this leaves room)."""

PROBE_NAME = ".shrinkviz-probe"


class PreflightError(ValueError):
    """Problems found before a sweep runs; ``problems`` lists them, the message joins them on one line."""

    def __init__(self, problems: list[str], n_runs: int) -> None:
        self.problems = list(problems)
        super().__init__(
            f"preflight found {len(problems)} problem(s) in a sweep of {n_runs} run(s); nothing was run: "
            + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free(path: Path) -> int:
    return shutil.disk_usage(_existing_parent(path)).free


def _probe(runs_dir: Path) -> None:
    """Create ``runs_dir``, write, fsync and remove a probe file in it, then remove the folders created
    (the first record creates them again), so a sweep that stops here leaves no trace."""
    created = [p for p in (runs_dir, *runs_dir.parents) if not p.exists()]
    runs_dir.mkdir(parents=True, exist_ok=True)
    probe = runs_dir / f"{PROBE_NAME}.{socket.gethostname()}.{os.getpid()}"
    with open(probe, "wb") as fh:
        fh.write(b"probe")
        fh.flush()
        os.fsync(fh.fileno())
    probe.unlink()
    for p in created:
        try:
            p.rmdir()
        except OSError:  # another process is using it now: leave it
            break


def check_store(store: Any, n_runs: int) -> list[str]:
    """Problems of a store about to receive ``n_runs`` records (it is created when absent)."""
    path = Path(store.path)
    fix = "pass a writable directory (--store DIR / sweep(store=...))"
    for p in (path, Path(store.runs_dir)):
        if p.exists() and not p.is_dir():
            return [f"store path {p} is a file, not a directory. Fix: {fix}, or move the file away"]
    runs_dir = Path(store.runs_dir)
    for attempt in range(5):  # another sweep may remove the folders it created for its own probe
        try:
            _probe(runs_dir)
            break
        except FileNotFoundError:
            if attempt == 4:
                return [f"store {path} keeps disappearing while it is probed. Fix: {fix}"]
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else _first_line(exc)
            if exc.errno == errno.ENOSPC:
                return [f"store {path} is on a full disk ({why}). Fix: free space there or {fix}"]
            return [f"store {path} is not writable ({why}). Fix: {fix}"]
    free, need = _free(path), n_runs * RECORD_BYTES
    if free < need:
        return [
            f"store {path} has {free / 2**20:.1f} MiB free but {n_runs} run(s) need about {need / 2**20:.1f} "
            f"MiB. Fix: free space there or {fix}"
        ]
    return []


_DATA_INFO: dict[tuple[str, str], tuple[tuple[int, ...], int]] = {}


def _data_info(name: str, path: str = "") -> tuple[tuple[int, ...], int] | str:
    """(input shape, classes) of a dataset (an ``imagefolder`` at ``path``), or the one-line reason it does
    not load (successes are cached; a failure is tried again next time, after the user has fixed it)."""
    from shrinkviz.data import load_dataset

    if (name, path) not in _DATA_INFO:
        try:
            data = load_dataset(name, path=path or None)
        except (OSError, ValueError) as exc:
            return _first_line(exc)
        _DATA_INFO[(name, path)] = (tuple(data.input_shape), int(data.num_classes))
    return _DATA_INFO[(name, path)]


@lru_cache(maxsize=256)
def _model_info(name: str, shape: tuple[int, ...], classes: int) -> tuple[int, int] | str:
    """(all parameters, prunable parameters) of a model built for the data, or why it cannot take it."""
    import torch

    from shrinkviz.loop.masks import prunable_parameters
    from shrinkviz.models import create_model

    try:
        with torch.no_grad():
            model = create_model(name, input_shape=shape, num_classes=classes).eval()
            out = model(torch.zeros(1, *shape))
    except Exception as exc:  # noqa: BLE001 - any failure to build or run is the problem reported
        return _first_line(exc)
    if tuple(out.shape) != (1, classes):
        return f"gives output {tuple(out.shape)} for one image, expected (1, {classes})"
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(getattr(m, attr).numel() for _, m, attr in prunable_parameters(model))
    return total, prunable


def max_compression(total: int, prunable: int) -> float:
    """The largest reachable ratio ``total / nonzero`` when only ``prunable`` parameters can be zeroed.

    Example:
        >>> max_compression(1000, 900)
        10.0
    """
    fixed = total - prunable
    return total / fixed if fixed else float(total)


def _registry_problems(exp: Experiment) -> list[str]:
    from shrinkviz.data import available_datasets
    from shrinkviz.models import available_models
    from shrinkviz.techniques.prune import available_strategies

    try:
        from shrinkviz.deploy.runtimes import RUNTIMES
    except ImportError:  # pragma: no cover - the deploy layer is optional here
        RUNTIMES = exp.latency.runtimes
    checks = [("model", exp.model, available_models()), ("dataset", exp.data.name, available_datasets())]
    if exp.distill.student:
        checks.append(("model", exp.distill.student, available_models()))
    if exp.prune.strategy:
        checks.append(("pruning strategy", exp.prune.strategy, available_strategies()))
    checks += [("latency runtime", r, RUNTIMES) for r in exp.latency.runtimes]
    return [str(unknown_name(kind, name, valid)) for kind, name, valid in checks if name not in valid]


def check_experiments(experiments: Iterable[Experiment]) -> list[str]:
    """Problems of the grid points, grouped by cause, each with the number of runs it affects."""
    from shrinkviz.techniques.prune.strategies import target_nonzero

    groups: dict[str, int] = {}
    for exp in experiments:
        found = _registry_problems(exp)
        if not found:
            info = _data_info(exp.data.name, exp.data.path)
            if isinstance(info, str):
                found.append(f"dataset {exp.data.name!r} does not load: {info}")
            else:
                shape, classes = info
                for model in dict.fromkeys([exp.model, exp.distill.student or exp.model]):
                    built = _model_info(model, shape, classes)
                    if isinstance(built, str):
                        found.append(
                            f"model {model!r} cannot take {exp.data.name}'s input {shape}: {built}. "
                            "Fix: pick a model for this input size"
                        )
                    elif exp.prune.strategy and model == exp.model:
                        total, prunable = built
                        wanted = target_nonzero(total, exp.prune.compression)
                        if wanted < 1 or wanted < total - prunable:
                            found.append(
                                f"compression={exp.prune.compression:g} for {model} on {exp.data.name}: max "
                                f"reachable is x{max_compression(total, prunable):.4g} (only "
                                f"{prunable:,} of {total:,} parameters are prunable). Fix: lower it"
                            )
        for problem in found:
            groups[problem] = groups.get(problem, 0) + 1
    return [f"{p} (runs: {n})" for p, n in groups.items()]


def check_cache_space(experiments: Iterable[Experiment]) -> list[str]:
    """Free space under the cache root for the baselines these runs may train (checkpoint + temp copy)."""
    from shrinkviz.core.io import cache_root

    need = 0
    for model, data, path, _baseline in {
        (e.model, e.data.name, e.data.path, e.baseline) for e in experiments
    }:
        info = _data_info(data, path)
        built = _model_info(model, *info) if not isinstance(info, str) else None
        if isinstance(built, tuple):
            need += 2 * 4 * built[0]
    root = cache_root()
    free = _free(root)
    if free < need:
        return [
            f"cache root {root} has {free / 2**20:.1f} MiB free but the baselines need about "
            f"{need / 2**20:.1f} MiB. Fix: free space there or set SHRINKVIZ_CACHE to a roomier folder"
        ]
    return []


def preflight(experiments: Iterable[Experiment], store: Any) -> None:
    """Check the runs ``experiments`` are about to make and the store they go to; raise every problem.

    Raises:
        PreflightError: one or more problems (all of them, grouped), before anything has run.
    """
    experiments = list(experiments)
    if not experiments:
        return
    problems = check_experiments(experiments)
    problems += check_store(store, len(experiments))
    if not problems:
        problems += check_cache_space(experiments)
    if problems:
        raise PreflightError(problems, len(experiments))
