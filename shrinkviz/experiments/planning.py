"""How a sweep uses the machine: how many runs at once, with how many threads each, and the baselines first.

Small models scale poorly with intra-op threads, so on an N-core machine runs go to N single-threaded Dask
worker processes (a LocalCluster) whenever the grid's training work outweighs starting them, and stay in
this process (all threads) otherwise. The rule, from measurements on a 2-core AMD EPYC:

* one core trains MnistNet (2.29 M MACs per image, channels-last) at about 27 G multiply-adds per second
  counting forward and backward (3 x MACs x images: 88 G in 3.2 s of CPU for 12,800 images);
  :data:`TRAIN_GMACS` takes 20 to stay on the safe side;
* a 2-worker LocalCluster takes about 8 s before its first run starts (2.7 s to start, 5.4 s for the
  workers to import torch and shrinkviz);

so a grid whose estimated training time on one core is under :data:`IN_PROCESS_BELOW_S` runs in-process.
On a LocalCluster, the baselines the runs need are trained before any run is dispatched, in this process
with every thread (they would otherwise train on one worker's single thread while the others wait).
Runs that train side by side are not timed while the others train: their latency is measured after the
last run, in one :func:`~shrinkviz.experiments.remeasure.remeasure` sitting in this process
(``SweepResult.latency_sitting``).

Example:
    >>> from shrinkviz.experiments.experiment import Experiment
    >>> tiny = Experiment(model="tiny_mlp", data={"name": "digits", "train": 256}, latency={"runtimes": []})
    >>> plan = plan_execution([tiny, tiny.replace(seed=1)], cores=2)
    >>> plan.kind, plan.workers, plan.threads
    ('in-process', 1, 2)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TRAIN_GMACS = 20.0
"""Training multiply-adds (forward + backward, 3 x MACs per image) one core does per second, in G."""

IN_PROCESS_BELOW_S = 60.0
"""Grids whose estimated single-core training time is below this run in-process."""


@dataclass(frozen=True)
class Plan:
    """Where a sweep's runs execute: ``kind`` is ``in-process`` or ``dask``, with ``workers`` processes of
    ``threads`` torch threads each, and ``reason`` says why (the estimate it rests on)."""

    kind: str
    workers: int
    threads: int
    reason: str

    def executor(self) -> Any:
        """A new executor for this plan (the caller starts and closes it)."""
        from shrinkviz.experiments.executors import DaskExecutor, InProcessExecutor

        if self.kind == "dask":
            return DaskExecutor(n_workers=self.workers, threads_per_worker=self.threads)
        return InProcessExecutor()

    def describe(self) -> str:
        """One line, e.g. ``"dask: 2 workers x 1 thread (est. 540 s of training on one core)"``."""
        unit = "thread" if self.threads == 1 else "threads"
        return f"{self.kind}: {self.workers} worker{'s' if self.workers > 1 else ''} x {self.threads} {unit} ({self.reason})"


@functools.lru_cache(maxsize=64)
def _macs(model: str, input_shape: tuple[int, ...], num_classes: int) -> int:
    from shrinkviz.metrics.counts import total_macs
    from shrinkviz.models import create_model

    return total_macs(create_model(model, input_shape=input_shape, num_classes=num_classes))


def _epochs(exp: Any) -> int:
    """Training epochs of a run's compression stages (a baseline run trains nothing of its own)."""
    if exp.method == "baseline":
        return 0
    if exp.method == "pipeline":
        return sum(exp.pipeline.epochs)
    cfg_epochs = exp.finetune.train_config().epochs
    override = {"quant": exp.quant.epochs, "distill": exp.distill.epochs}.get(exp.method)
    return override or cfg_epochs


def train_images(exp: Any) -> int:
    """Training images a run's compression stages go through: epochs x examples per epoch (0 for a
    baseline run; its baseline's pretraining is not the run's).

    Example:
        >>> from shrinkviz.experiments.experiment import Experiment
        >>> exp = Experiment(model="tiny_mlp", data={"name": "digits", "train": 256})
        >>> train_images(exp), train_images(exp.replace(**{"prune.strategy": "random", "finetune.epochs": 3}))
        (0, 768)
    """
    from shrinkviz.experiments.runner import load_data

    epochs = _epochs(exp)
    if not epochs:
        return 0
    n_train = len(load_data(exp).train)
    return min(exp.finetune.examples or n_train, n_train) * epochs


def estimated_train_s(experiments: Sequence[Any]) -> float:
    """Seconds one core needs to train the runs' compression stages (baselines not included)."""
    from shrinkviz.experiments.runner import load_data

    total = 0.0
    for exp in experiments:
        images = train_images(exp)
        if not images:
            continue
        data = load_data(exp)
        macs = _macs(exp.model, tuple(data.input_shape), data.num_classes)
        total += 3 * macs * images / (TRAIN_GMACS * 1e9)
    return total


def plan_execution(experiments: Sequence[Any], cores: int | None = None) -> Plan:
    """The plan for running ``experiments`` on ``cores`` cores (default: this machine's).

    Raises:
        ValueError: ``cores`` below 1.
    """
    cores = (os.cpu_count() or 1) if cores is None else cores
    if not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores={cores!r}: must be a whole number >= 1")
    estimate = estimated_train_s(experiments)
    why = f"est. {estimate:.0f} s of training on one core"
    if cores == 1 or len(experiments) < 2 or estimate < IN_PROCESS_BELOW_S:
        return Plan("in-process", 1, cores, why)
    return Plan("dask", min(cores, len(experiments)), 1, why)


def train_baselines_first(
    experiments: Sequence[Any], progress: bool = False, executor: Any = None, task: Any = None
) -> int:
    """Load or train (and cache) every baseline the runs need before any run is dispatched; returns how
    many distinct baselines are ready. A baseline that fails to train is left to its runs, which record the
    error as failed runs like any other.

    One baseline trains here, with every thread. Several, given an ``executor`` (the sweep passes one only
    when it has more than one task slot), train side by side on it, one per slot (``task``: :func:`pretrain`, or a partial of it carrying a
    shipment): small models scale poorly with threads, so two single-threaded trainings finish well before
    two two-threaded ones in a row (notebook 02's confounder sweep trains 6 baselines)."""
    distinct: dict[str, Any] = {}
    for exp in experiments:
        distinct.setdefault(repr((exp.model, exp.data.to_dict(), exp.baseline.to_dict())), exp)
    if executor is not None and len(distinct) > 1:
        configs = [exp.to_json() for exp in distinct.values()]
        done = executor.map_unordered(task or pretrain, configs, getattr(executor, "torch_threads", None))
        return sum(bool(result) for _, result, error in done if error is None)
    return sum(pretrain(exp, progress=progress) for exp in distinct.values())


def pretrain(exp: Any, threads: int | None = None, progress: bool = False, shipment: Any = None) -> bool:
    """Load or train (and cache) the baseline of ``exp``; False when it cannot be trained (its runs will say
    why). ``exp`` is an Experiment, or its JSON as a worker gets it (then read by
    :func:`~shrinkviz.experiments.runner.worker_experiment` with ``threads`` and ``shipment``)."""
    from shrinkviz.experiments.runner import load_baseline, worker_experiment

    if isinstance(exp, str):
        exp = worker_experiment(exp, threads, shipment)
    try:
        load_baseline(exp, progress)
    except Exception:  # noqa: BLE001 - the runs themselves report it, with the whole traceback
        return False
    return True


__all__ = [
    "IN_PROCESS_BELOW_S",
    "TRAIN_GMACS",
    "Plan",
    "estimated_train_s",
    "train_images",
    "plan_execution",
    "pretrain",
    "train_baselines_first",
]
