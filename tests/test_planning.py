"""The sweep's execution plan: in-process for small grids, one single-threaded worker per core for big ones."""

from __future__ import annotations

import pytest

from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.planning import (
    IN_PROCESS_BELOW_S,
    TRAIN_GMACS,
    estimated_train_s,
    plan_execution,
    pretrain,
    train_baselines_first,
    train_images,
)

TINY = Experiment(
    model="tiny_mlp",
    data={"name": "digits", "train": 256, "val": 64, "test": 64},
    baseline={"epochs": 1},
    finetune={"preset": "adam_fast", "epochs": 1},
    latency={"runtimes": []},
)


def test_the_estimate_is_three_times_macs_per_image_seen():
    pruned = TINY.replace(strategy="global_weight", compression=2)
    macs = 64 * 32 + 32 * 10  # tiny_mlp on 8x8 digits
    assert estimated_train_s([TINY]) == 0.0  # a baseline run trains nothing of its own
    assert estimated_train_s([pruned]) == pytest.approx(3 * macs * 256 * 1 / (TRAIN_GMACS * 1e9))
    three_epochs = pruned.replace(**{"finetune.epochs": 3, "finetune.examples": 100})
    assert estimated_train_s([three_epochs]) == pytest.approx(3 * macs * 100 * 3 / (TRAIN_GMACS * 1e9))


def test_train_images_count_the_compression_stages_epochs_over_their_examples():
    pruned = TINY.replace(strategy="global_weight", compression=2)
    assert train_images(TINY) == 0  # the baseline's pretraining is not the run's
    assert train_images(pruned) == 256  # 1 epoch over the 256-image subset
    assert train_images(pruned.replace(**{"finetune.epochs": 3, "finetune.examples": 100})) == 300
    assert train_images(pruned.replace(**{"finetune.examples": 10_000})) == 256  # no more than the split


def test_small_grids_stay_in_process_big_ones_get_a_worker_per_core():
    small = [TINY.replace(strategy="random", compression=c) for c in (2, 4, 8)]
    plan = plan_execution(small, cores=4)
    assert (plan.kind, plan.workers, plan.threads) == ("in-process", 1, 4)
    big = [
        TINY.replace(model="resnet56", strategy="random", compression=c, **{"finetune.epochs": 90})
        for c in (2, 4, 8)
    ]
    assert estimated_train_s(big) > IN_PROCESS_BELOW_S
    plan = plan_execution(big, cores=4)
    assert (plan.kind, plan.workers, plan.threads) == ("dask", 3, 1)  # no more workers than runs
    assert plan_execution(big, cores=1).kind == "in-process"
    assert plan_execution(big[:1], cores=4).kind == "in-process"
    assert plan.describe().startswith("dask: 3 workers x 1 thread (est. ")
    with pytest.raises(ValueError, match="cores=0"):
        plan_execution(small, cores=0)


def test_baselines_are_trained_once_and_failures_are_left_to_the_runs(monkeypatch):
    from shrinkviz.experiments import runner

    calls = []

    def fake(exp, progress=False):
        calls.append(exp.model)
        if exp.model == "mnistnet":
            raise ValueError("cannot take 8x8 inputs")

    monkeypatch.setattr(runner, "load_baseline", fake)
    grid = [
        TINY,
        TINY.replace(seed=1),
        TINY.replace(strategy="random", compression=2),
        TINY.replace(model="mnistnet"),
    ]
    assert train_baselines_first(grid) == 1
    assert calls == ["tiny_mlp", "mnistnet"]


def test_several_baselines_train_side_by_side_on_the_workers(monkeypatch):
    from shrinkviz.experiments import runner
    from shrinkviz.experiments.executors import InProcessExecutor

    trained = []
    monkeypatch.setattr(
        runner, "load_baseline", lambda exp, progress=False: trained.append(exp.baseline.seed)
    )

    class TwoSlots(InProcessExecutor):  # what the sweep asks of a cluster: task slots and map_unordered
        torch_threads = 1
        handed = []

        def slots(self):
            return 2

        def map_unordered(self, fn, items, *args):
            items = list(items)
            self.handed += items
            return super().map_unordered(fn, items, *args)

    grid = [TINY, TINY.replace(seed=1), TINY.replace(baseline_seed=1), TINY.replace(baseline_seed=2)]
    ex = TwoSlots()
    assert train_baselines_first(grid, executor=ex) == 3
    assert len(ex.handed) == 3 and all(isinstance(item, str) for item in ex.handed)  # configs as JSON
    assert sorted(trained) == [0, 1, 2]
    trained.clear()
    assert train_baselines_first(grid[:2], executor=ex) == 1 and len(ex.handed) == 3  # one: trained here
    monkeypatch.undo()
    assert pretrain(TINY.replace(model="mnistnet").to_json()) is False  # 8x8 digits: its runs will say why
