"""Masks: attach / read / bake, zeros that survive any optimizer, name mapping across fusion and QAT."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from prune_helpers import assert_same_state, state
from torch import nn

from shrinkviz.experiments.schema import LAYER_COLUMNS
from shrinkviz.loop.train import TrainConfig, fit
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import (
    MaskCallback,
    classifier_layers,
    get_masks,
    has_masks,
    mask_callbacks,
    mask_table,
    masks_from_state_dict,
    prunable_parameters,
    prune,
    remove_masks,
    set_masks,
)


def _pruned(shape=(1, 8, 8), compression=4.0, strategy="layer_weight", name="tiny_cnn"):
    return prune(
        create_model(name, input_shape=shape, seed=0), strategy=strategy, compression=compression
    ).model


def test_masks_are_bool_buffers_on_the_owning_module_named_by_parameter():
    model = _pruned()
    masks = get_masks(model)
    assert sorted(masks) == [name for name, _, _ in prunable_parameters(model)]
    conv = model.features[0].conv
    assert conv.weight_mask.dtype == torch.bool and conv.weight_mask.shape == conv.weight.shape
    assert "features.0.conv.weight_mask" in model.state_dict()
    for name, mask in masks.items():
        weight = model.get_parameter(name)
        assert torch.equal(weight != 0, mask)  # masked weights are zero, kept ones (random init) nonzero


def test_classifier_excluded_by_default_and_last_linear_for_plain_modules():
    model = create_model("tiny_cnn", seed=0)
    assert classifier_layers(model) == {"classifier"}
    names = [n for n, _, _ in prunable_parameters(model)]
    assert "classifier.weight" not in names and len(names) == 6
    assert "classifier.weight" in [n for n, _, _ in prunable_parameters(model, include_classifier=True)]
    with_bias = [n for n, _, _ in prunable_parameters(model, prune_bias=True)]
    assert with_bias == names  # registry convs before BatchNorm have no bias
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    assert classifier_layers(plain) == {"2"}
    assert [n for n, _, _ in prunable_parameters(plain, prune_bias=True)] == ["0.weight", "0.bias"]


def test_set_masks_validates_everything_before_changing_anything():
    model = create_model("tiny_cnn", seed=0)
    before = state(model)
    good = torch.zeros_like(model.features[0].conv.weight, dtype=torch.bool)
    with pytest.raises(ValueError, match="not a parameter"):
        set_masks(model, {"features.0.conv.weight": good, "features.9.conv.weight": good})
    with pytest.raises(ValueError, match="shape"):
        set_masks(model, {"features.0.conv.weight": good, "features.1.body.0.conv.weight": good})
    assert_same_state(model, before)
    assert not has_masks(model)


def test_remove_masks_bakes_zeros_and_leaves_a_plain_model():
    model = _pruned()
    masks = get_masks(model)
    x = torch.randn(3, 1, 8, 8)
    model.eval()
    expected = model(x)
    baked = remove_masks(model)
    assert not has_masks(baked)
    assert sorted(baked.state_dict()) == sorted(create_model("tiny_cnn", input_shape=(1, 8, 8)).state_dict())
    for name, mask in masks.items():
        weight = baked.get_parameter(name)
        assert torch.equal(weight != 0, mask)
        assert not torch.signbit(weight[~mask]).any()  # +0.0, not -0.0: compresses like zeros on disk
    torch.testing.assert_close(baked(x), expected, rtol=0, atol=0)


def test_mask_table_reports_exact_counts_per_layer():
    model = _pruned(compression=4.0)
    table = mask_table(model)
    assert list(table.columns) == [c for c in LAYER_COLUMNS if c not in ("run_id", "macs", "macs_nonzero")]
    first = table.iloc[0]
    weight = model.features[0].conv.weight
    assert (first["layer"], first["kind"], first["shape"]) == ("features.0.conv", "Conv2d", "8x1x3x3")
    assert first["params"] == 72 and first["nonzero"] == int(weight.count_nonzero())
    assert first["sparsity"] == pytest.approx(1 - first["nonzero"] / 72)
    assert table.set_index("layer").loc["classifier", "sparsity"] == 0.0
    assert str(table["params"].dtype) == "int64" and str(table["sparsity"].dtype) == "float64"


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(
            epochs=2,
            batch_size=32,
            optimizer="sgd",
            lr=0.5,
            momentum=0.9,
            nesterov=True,
            weight_decay=0.05,
            schedule="constant",
            augment="crop_flip",
        ),
        TrainConfig(
            epochs=2,
            batch_size=32,
            optimizer="adam",
            lr=0.05,
            momentum=0.0,
            weight_decay=0.01,
            schedule="constant",
            augment="none",
        ),
        TrainConfig(
            epochs=2,
            batch_size=32,
            optimizer="adamw",
            lr=0.05,
            momentum=0.0,
            weight_decay=0.1,
            schedule="cosine",
            augment="none",
        ),
    ],
    ids=["sgd_momentum_wd", "adam_wd", "adamw"],
)
def test_zeros_survive_training_with_any_optimizer(digits, cfg):
    data = digits.subset(train=160, val=32, test=32)  # 5 steps per epoch, 10 steps in all
    model = _pruned(compression=5.0, strategy="layer_weight")
    masks = get_masks(model)
    kept_before = {n: model.get_parameter(n).detach().clone() for n in masks}
    history = fit(model, data, cfg, progress=False)
    for name, mask in masks.items():
        weight = model.get_parameter(name)
        assert torch.equal(get_masks(model)[name], mask)
        assert int(weight[~mask].count_nonzero()) == 0, name
        assert not torch.equal(weight[mask], kept_before[name][mask]), f"{name}: kept weights did not train"
    expected = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    assert [row["sparsity"] for row in history] == [expected, expected]


def test_fit_adds_the_mask_callback_only_for_masked_models():
    assert mask_callbacks(create_model("tiny_mlp")) == []
    pruned = _pruned(name="tiny_mlp")
    added = mask_callbacks(pruned)
    assert len(added) == 1 and isinstance(added[0], MaskCallback)
    assert mask_callbacks(pruned, [MaskCallback()]) == []  # an explicit one is not doubled


def test_masks_reattach_after_eager_fusion_by_their_original_names():
    from torch.ao.quantization import fuse_modules

    model = _pruned().eval()
    masks = get_masks(model)
    group = ["features.0.conv", "features.0.bn", "features.0.act"]
    fused = fuse_modules(remove_masks(copy.deepcopy(model)), [group])
    set_masks(fused, {"features.0.conv.weight": masks["features.0.conv.weight"]})
    assert torch.equal(fused.features[0].conv[0].weight_mask, masks["features.0.conv.weight"])
    assert sorted(get_masks(fused)) == ["features.0.conv.0.weight"]


def test_masks_reattach_after_qat_preparation_and_survive_qat_training(digits):
    from torch.ao.quantization import fuse_modules_qat, get_default_qat_qconfig, prepare_qat

    from shrinkviz.models import fusion_groups

    data = digits.subset(train=64, val=32, test=32)
    model = _pruned(compression=4.0, strategy="global_weight")
    masks = get_masks(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = fuse_modules_qat(copy.deepcopy(model).train(), fusion_groups(model))
        qat.qconfig = get_default_qat_qconfig("x86")
        qat = prepare_qat(qat)
        assert not has_masks(qat)  # module swaps drop buffers: re-attach
        set_masks(qat, masks)
        assert sorted(get_masks(qat)) == sorted(masks)
        fit(
            qat,
            data,
            TrainConfig(epochs=1, batch_size=16, lr=0.1, schedule="constant", augment="none"),
            progress=False,
        )
    for name, mask in masks.items():
        assert int(qat.get_parameter(name)[~mask].count_nonzero()) == 0


def test_a_pruned_checkpoint_reloads_into_a_fresh_model():
    model = _pruned()
    saved = state(model)
    fresh = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=1)
    set_masks(fresh, masks_from_state_dict(saved))
    fresh.load_state_dict(saved)
    assert_same_state(fresh, saved)
