"""Iterative pruning (geometric steps) and gradual pruning (Zhu & Gupta's cubic schedule)."""

from __future__ import annotations

import pytest
import torch
from prune_helpers import assert_same_state, state

from shrinkviz.loop.train import TrainConfig, fit
from shrinkviz.metrics.counts import count_parameters
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import GradualPruning, get_masks, iterative_prune, prunable_parameters
from shrinkviz.techniques.prune.schedules import polynomial_sparsity
from shrinkviz.techniques.prune.strategies import target_nonzero

CFG = TrainConfig(
    epochs=1,
    batch_size=32,
    optimizer="adam",
    lr=1e-2,
    momentum=0.0,
    weight_decay=0.0,
    schedule="constant",
    augment="none",
)


@pytest.fixture
def small(digits):
    return digits.subset(train=64, val=32, test=32)


def test_polynomial_schedule_matches_zhu_and_gupta():
    assert polynomial_sparsity(0, 0, 10, 0.1, 0.9) == pytest.approx(0.1)
    assert polynomial_sparsity(5, 0, 10, 0.1, 0.9) == pytest.approx(0.9 - 0.8 * 0.5**3)
    assert polynomial_sparsity(10, 0, 10, 0.1, 0.9) == pytest.approx(0.9)
    assert polynomial_sparsity(42, 0, 10, 0.1, 0.9) == pytest.approx(0.9)


def test_iterative_pruning_takes_geometric_steps_to_the_exact_target(small):
    model = create_model("tiny_cnn", dataset=small, seed=0)
    before = state(model)
    total, _ = count_parameters(model)
    pruned, history = iterative_prune(
        model, small, "global_weight", 8, rounds=3, finetune=CFG, progress=False
    )
    assert_same_state(model, before)
    assert [row["round"] for row in history] == [1, 2, 3]
    assert [row["compression"] for row in history] == pytest.approx([2, 4, 8])
    assert [row["stage"] for row in history] == ["prune_round1", "prune_round2", "prune_round3"]
    assert count_parameters(pruned)[1] == target_nonzero(total, 8)
    masked = sum(int((~m).sum()) for m in get_masks(pruned).values())
    size = sum(m.numel() for m in get_masks(pruned).values())
    assert history[-1]["sparsity"] == pytest.approx(masked / size)


def test_iterative_pruning_validates_before_training(small):
    model = create_model("tiny_cnn", dataset=small, seed=0)
    with pytest.raises(ValueError, match="infeasible"):
        iterative_prune(model, small, "global_weight", 1e5, rounds=2, finetune=CFG, inplace=True)
    with pytest.raises(ValueError, match="rounds"):
        iterative_prune(model, small, "global_weight", 4, rounds=0, finetune=CFG)
    with pytest.raises(ValueError, match="unknown training preset"):
        iterative_prune(model, small, "global_weight", 4, finetune="nope")
    assert not get_masks(model)


def test_gradual_pruning_follows_the_cubic_schedule_per_epoch(small):
    model = create_model("tiny_cnn", dataset=small, seed=0)
    total, _ = count_parameters(model)
    callback = GradualPruning("global_weight", 6, end=4, initial_sparsity=0.1)
    history = fit(model, small, CFG.replace(epochs=5), callbacks=[callback], progress=False)
    size = sum(model.get_parameter(n).numel() for n, _, _ in prunable_parameters(model))
    # the schedule aims at the sparsity the target implied at fit_start; the last update hits the exact
    # whole-model ratio from the trained state (BatchNorm biases, zero at init, are nonzero by then)
    final = callback.sparsity_at(4)
    expected = [polynomial_sparsity(epoch, 1, 4, 0.1, final) for epoch in (1, 2, 3)]
    assert [row["sparsity"] for row in history[:3]] == pytest.approx(expected, abs=1 / size)
    assert history[3]["sparsity"] == history[4]["sparsity"] == pytest.approx(final, abs=0.03)
    assert count_parameters(model)[1] == target_nonzero(total, 6)
    sparsities = [row["sparsity"] for row in history]
    assert sparsities == sorted(sparsities)


def test_gradual_pruning_by_steps_and_the_target_even_if_training_stops_early(small):
    model = create_model("tiny_cnn", dataset=small, seed=0)
    total, _ = count_parameters(model)
    callback = GradualPruning("layer_weight", 4, unit="step", begin=0, end=20, frequency=2)
    history = fit(model, small, CFG.replace(epochs=2), callbacks=[callback], progress=False)  # 4 steps only
    assert sorted(callback._done) == [0, 2, 4, 20]  # updates at 0, 2, 4 then the final one at fit_end
    assert history[-1]["sparsity"] < callback.sparsity_at(20)
    assert count_parameters(model)[1] == target_nonzero(total, 4)


def test_gradual_pruning_rejects_bad_settings():
    with pytest.raises(ValueError, match="end"):
        GradualPruning("global_weight", 4, end=0)
    with pytest.raises(ValueError, match="unit"):
        GradualPruning("global_weight", 4, end=3, unit="hour")
    with pytest.raises(ValueError, match="needs data"):
        GradualPruning("global_gradient", 4, end=3)
    with pytest.raises(ValueError, match="unknown pruning strategy"):
        GradualPruning("magnitude", 4, end=3)
    with pytest.raises(ValueError, match="compression"):
        GradualPruning("global_weight", float("nan"), end=3)


def test_gradual_pruning_with_gradients_uses_the_given_data(small):
    model = create_model("tiny_mlp", dataset=small, seed=0)
    callback = GradualPruning("layer_gradient", 3, end=2, data=small)
    fit(model, small, CFG.replace(epochs=2), callbacks=[callback], progress=False)
    total, nonzero = count_parameters(model)
    assert nonzero == target_nonzero(total, 3)
    assert torch.equal(model.features[1].linear.weight != 0, model.features[1].linear.weight_mask)
