"""ShrinkBench's protocol, exactly: the ``shrinkbench_exact`` preset, its reporting rule
(``select="shrinkbench_best_test"``), ShrinkBench's data split (``val_fraction=0``) and the pruning options
(biases pruned, gradient scores from one batch)."""

from __future__ import annotations

import pytest
import torch

from shrinkviz.data import Normalizer, load_dataset
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.specs import DataSpec, PruneSpec
from shrinkviz.loop.config import PRESETS, TrainConfig
from shrinkviz.loop.train import evaluate, fit
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import apply_pruning, prune

# SGD at a learning rate high enough that test top-1 goes up and down between epochs (found by trying).
NOISY = TrainConfig(
    epochs=6, batch_size=32, optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=0.0,
    schedule="constant", augment="none",
)  # fmt: skip


def test_preset_is_shrinkbench_recipe_with_its_reporting_rule():
    cfg = PRESETS["shrinkbench_exact"]
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay) == (
        "sgd",
        1e-3,
        0.9,
        True,
        0.0,
    )
    assert (cfg.schedule, cfg.warmup_epochs, cfg.epochs, cfg.batch_size) == ("constant", 0, 30, 128)
    assert (cfg.augment, cfg.label_smoothing, cfg.select) == ("auto", 0.0, "shrinkbench_best_test")
    assert cfg.replace(select="last") == PRESETS["shrinkbench"]
    assert TrainConfig.resolve("shrinkbench_exact") is cfg


def _test_top1_after(ds, epochs: int, start=None) -> tuple[float, dict]:
    model = create_model("tiny_mlp", dataset=ds, seed=0) if start is None else start()
    if epochs:
        fit(model, ds, NOISY.replace(epochs=epochs), seed=0, progress=False)
    return evaluate(model, ds.test, Normalizer(ds.mean, ds.std))["top1"], model.state_dict()


@pytest.mark.parametrize("val_fraction", [0.1, 0.0])
def test_best_test_restores_the_epoch_with_the_best_test_top1(val_fraction):
    # A constant schedule: the first k epochs of a 6-epoch run are a k-epoch run, so each epoch's test
    # top-1 is known from separate runs.
    ds = load_dataset("digits", val_fraction=val_fraction).subset(train=256)
    per_epoch = [_test_top1_after(ds, k) for k in range(NOISY.epochs + 1)]
    tops = [t for t, _ in per_epoch]
    best = tops.index(max(tops))
    assert 0 < best < NOISY.epochs  # this recipe's best epoch is neither the start nor the last
    model = create_model("tiny_mlp", dataset=ds, seed=0)
    history = fit(model, ds, NOISY.replace(select="shrinkbench_best_test"), seed=0, progress=False)
    assert evaluate(model, ds.test, Normalizer(ds.mean, ds.std))["top1"] == max(tops)
    for name, value in per_epoch[best][1].items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)
    if val_fraction == 0:  # ShrinkBench's split: the history's validation figures are the test figures
        assert [row["val_top1"] for row in history] == tops[1:]


def test_best_test_keeps_the_starting_weights_when_training_only_loses():
    ds = load_dataset("digits").subset(train=256)

    def trained():  # the best model of the noisy run: every further epoch at lr 0.5 does worse
        model = create_model("tiny_mlp", dataset=ds, seed=0)
        fit(model, ds, NOISY.replace(epochs=5), seed=0, progress=False)
        return model

    start_top1, start_state = _test_top1_after(ds, 0, trained)
    assert _test_top1_after(ds, 1, trained)[0] < start_top1
    model = trained()
    fit(model, ds, NOISY.replace(epochs=1, select="shrinkbench_best_test"), seed=0, progress=False)
    for name, value in start_state.items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0)


def test_val_fraction_zero_is_shrinkbench_split():
    full, carved = load_dataset("digits", val_fraction=0.0), load_dataset("digits")
    assert full.val_is_test and not carved.val_is_test
    assert len(full.train) == len(carved.train) + len(carved.val)
    assert torch.equal(full.test.images, carved.test.images)
    with pytest.raises(ValueError, match=r"val_fraction=-0.1: must be in \[0, 1\)"):
        load_dataset("digits", val_fraction=-0.1)


def test_new_options_enter_the_config_only_when_set():
    default = Experiment(model="tiny_mlp", data="digits", prune={"strategy": "random", "compression": 2})
    assert "val_fraction" not in default.to_dict()["data"]
    assert set(default.to_dict()["prune"]) == {"strategy", "compression"}
    exact = default.replace(**{"data.val_fraction": 0, "prune.bias": True, "prune.score_batches": 1})
    assert exact.to_dict()["data"]["val_fraction"] == 0.0
    assert exact.to_dict()["prune"] == {
        "strategy": "random",
        "compression": 2.0,
        "bias": True,
        "score_batches": 1,
    }
    assert exact.run_id != default.run_id and Experiment.from_json(exact.to_json()) == exact
    with pytest.raises(ValueError, match=r"Experiment.data.val_fraction=1"):
        DataSpec("digits", val_fraction=1)
    with pytest.raises(ValueError, match=r"Experiment.prune.score_batches=0"):
        PruneSpec("global_gradient", 2, score_batches=0)
    with pytest.raises(ValueError, match=r"prune.bias / prune.score_batches apply to prune runs only"):
        Experiment(model="tiny_cnn", data="digits", prune={"strategy": "random", "compression": 2, "bias": True},
                   quant="qat", pipeline={"order": "PQ", "epochs": [1, 1]})  # fmt: skip


def test_bias_pruning_and_one_score_batch():
    ds = load_dataset("digits")
    model = create_model("tiny_mlp", dataset=ds, seed=0)  # its hidden Linear has a bias
    with_bias = prune(model, ds, strategy="layer_weight", compression=2, prune_bias=True).model
    masked = {n for n, _ in with_bias.named_buffers() if n.endswith("_mask")}
    assert any(n.endswith("bias_mask") for n in masked) and any(n.endswith("weight_mask") for n in masked)
    plain = prune(model, ds, strategy="layer_weight", compression=2).model
    assert not any(n.endswith("bias_mask") for n, _ in plain.named_buffers())
    one = apply_pruning(model, "global_gradient", 4, data=ds, score_batches=1)
    four = apply_pruning(model, "global_gradient", 4, data=ds)
    ones = {n: b for n, b in one.named_buffers() if n.endswith("_mask")}
    fours = {n: b for n, b in four.named_buffers() if n.endswith("_mask")}
    assert ones.keys() == fours.keys()
    assert sum(int(ones[n].sum()) for n in ones) == sum(int(fours[n].sum()) for n in fours)  # same budget
    assert any(not torch.equal(ones[n], fours[n]) for n in ones)  # scored on other examples
    with pytest.raises(ValueError, match=r"score_batches=0: must be a whole number >= 1"):
        apply_pruning(model, "global_gradient", 4, data=ds, score_batches=0)


@pytest.mark.parametrize(("select", "passes"), [("last", 1), ("shrinkbench_best_test", 2)])
def test_epoch_eval_time_counts_every_evaluation_of_the_epoch(monkeypatch, select, passes):
    import time

    import shrinkviz.loop.train as train_module

    pause, evaluate_ = 0.2, train_module.evaluate

    def slow_evaluate(*args, **kwargs):
        time.sleep(pause)
        return evaluate_(*args, **kwargs)

    ds = load_dataset("digits").subset(train=64, val=32, test=32)
    monkeypatch.setattr(train_module, "evaluate", slow_evaluate)
    model = create_model("tiny_mlp", dataset=ds, seed=0)
    history = fit(model, ds, NOISY.replace(epochs=2, select=select), seed=0, progress=False)
    for row in history:  # validation, and with test-set selection the test pass, are inside the epoch
        assert passes * pause <= row["eval_s"] < (passes + 1) * pause and row["eval_s"] < row["epoch_s"]
