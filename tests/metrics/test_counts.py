"""Counts and MACs against hand computations, nonzero-aware metrics, measure(), INT8 models."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from shrinkviz.data import Normalizer
from shrinkviz.experiments.schema import LAYER_COLUMNS, RUN_COLUMNS
from shrinkviz.loop.train import evaluate
from shrinkviz.metrics import measure
from shrinkviz.metrics.counts import (
    count_parameters,
    is_quantized_layer,
    layer_macs,
    layer_table,
    nonzero_activations,
    total_macs,
    weight_table,
)
from shrinkviz.models import create_model, fusion_groups
from shrinkviz.techniques.prune import prune, prune_channels, remove_masks


def test_mnistnet_macs_are_the_true_2293000_not_shrinkbenchs_same_padding_figure():
    # 28x28 -> conv 5x5 unpadded -> 20x24x24, each output reads 1x5x5:   20*24*24 * 25 =   288,000
    # pool -> 12x12 -> conv 5x5 unpadded -> 50x8x8, each reads 20x5x5:    50*8*8 * 500  = 1,600,000
    # pool -> 4x4 -> flatten 800 -> linear 500:                          500 * 800     =   400,000
    # linear 10:                                                         10 * 500      =     5,000
    model = create_model("mnistnet", input_shape=(1, 28, 28))
    assert layer_macs(model) == {
        "features.0.conv": 288_000,
        "features.2.conv": 1_600_000,
        "features.5.linear": 400_000,
        "classifier": 5_000,
    }
    assert total_macs(model) == 2_293_000


def test_lenet5_macs_by_hand_with_a_padded_and_an_unpadded_conv():
    # conv1 5x5 padding 2 keeps 28x28: 6*28*28 outputs * (1*5*5)      = 117,600
    # pool -> 14x14; conv2 5x5 unpadded -> 10x10: 16*10*10 * (6*5*5)  = 240,000
    # pool -> 5x5 -> 400 features; fc 120: 120*400 = 48,000; fc 84: 84*120 = 10,080; fc 10: 10*84 = 840
    model = create_model("lenet5", input_shape=(1, 28, 28))
    assert list(layer_macs(model).values()) == [117_600, 240_000, 48_000, 10_080, 840]
    assert total_macs(model) == 416_520


def test_resnet20_macs_by_hand():
    conv = lambda cout, hw, cin, k: cout * hw * hw * cin * k * k  # noqa: E731
    expected = (
        conv(16, 32, 3, 3)  # stem
        + 6 * conv(16, 32, 16, 3)  # stage 1: 3 blocks x 2 convs at 32x32
        + conv(32, 16, 16, 3)
        + 5 * conv(32, 16, 32, 3)  # stage 2: strided conv, then 5 at 16x16
        + conv(32, 16, 16, 1)  # stage 2 projection shortcut (1x1, stride 2)
        + conv(64, 8, 32, 3)
        + 5 * conv(64, 8, 64, 3)
        + conv(64, 8, 32, 1)  # stage 3 likewise at 8x8
        + 64 * 10  # classifier
    )
    assert expected == 40_813_184
    assert total_macs(create_model("resnet20", input_shape=(3, 32, 32))) == expected


def test_strided_grouped_and_depthwise_convs_and_linear_count_their_real_shapes():
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, groups=2),  # 9x9 -> 4x4: 8*16 outputs * (4/2 * 9) = 2,304
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise 4x4: 8*16 * (1 * 9)        = 1,152
        nn.Flatten(),
        nn.Linear(128, 5),  # 5 * 128                               =   640
    )
    assert layer_macs(model, input_shape=(4, 9, 9)) == {"0": 2_304, "1": 1_152, "3": 640}


def test_nonzero_macs_scale_each_layer_by_its_nonzero_weight_fraction():
    model = prune(
        create_model("resnet20", input_shape=(3, 32, 32), seed=0), strategy="layer_weight", compression=8
    ).model
    table = layer_table(model)
    assert list(table.columns) == [c for c in LAYER_COLUMNS if c != "run_id"]
    for row in table.itertuples():
        assert row.macs_nonzero * row.params == row.macs * row.nonzero  # exact: conv MACs = weights x H x W
    assert table.loc[table["layer"] == "classifier", "macs_nonzero"].item() == 640  # not pruned
    assert str(table["macs"].dtype) == "int64" and str(table["layer"].dtype) == "str"
    assert table[["layer", "params", "nonzero"]].equals(weight_table(model)[["layer", "params", "nonzero"]])


def test_parameter_counts_include_batchnorm_and_skip_masks_and_shared_weights():
    model = create_model("tiny_cnn", seed=0)
    assert count_parameters(model)[0] == sum(p.numel() for p in model.parameters())
    pruned = prune(model, strategy="global_weight", compression=4).model
    assert count_parameters(pruned)[0] == count_parameters(model)[0]  # mask buffers are not parameters
    shared = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(shared, shared)) == (12, 12)


def test_nonzero_activations_count_relu_outputs_per_input():
    model = create_model("tiny_mlp", input_shape=(1, 4, 4), seed=0)
    with torch.no_grad():
        hidden = model.features[1].linear
        hidden.weight.zero_()
        hidden.bias.copy_(torch.tensor([1.0, -1.0] * 12 + [0.0] * 8))  # 12 of the 32 hidden units fire
    assert nonzero_activations(model, torch.randn(5, 1, 4, 4)) == 12.0


def test_measure_returns_run_columns_with_exact_values(digits):
    data = digits.subset(test=100)
    model = create_model("tiny_cnn", dataset=data, seed=0)
    pruned = prune(model, strategy="layer_weight", compression=4).model
    row = measure(pruned, data)
    assert set(row) == {
        "top1",
        "top5",
        "params",
        "params_nonzero",
        "compression_ratio",
        "macs",
        "macs_nonzero",
        "speedup_theoretical",
        "activations_nonzero",
    }
    assert set(row) - {"activations_nonzero"} <= set(RUN_COLUMNS)
    expected = evaluate(pruned, data.test, Normalizer(data.mean, data.std))
    assert (row["top1"], row["top5"]) == (expected["top1"], expected["top5"])
    params, nonzero = count_parameters(pruned)
    assert (row["params"], row["params_nonzero"]) == (params, nonzero)
    assert row["compression_ratio"] == params / nonzero
    assert row["macs"] == total_macs(model)
    assert row["speedup_theoretical"] == row["macs"] / row["macs_nonzero"]
    assert measure(pruned, "digits", split="val")["params"] == params  # a registry name works too
    with pytest.raises(ValueError, match="split"):
        measure(pruned, data, split="holdout")


def test_measure_against_a_baseline_gives_structurally_pruned_models_a_real_speedup(digits):
    model = create_model("resnet20", dataset=digits, seed=0)
    small = prune_channels(model, keep=0.5).model
    row = measure(small, digits, baseline=model)
    assert row["compression_ratio"] == count_parameters(model)[0] / count_parameters(small)[1]
    assert row["speedup_theoretical"] == total_macs(model) / total_macs(small)
    assert row["speedup_theoretical"] > 3.5  # half the channels on both sides of most convs
    assert measure(small, digits)["speedup_theoretical"] == 1.0  # without a baseline: its own dense MACs


def test_counts_work_on_int8_models_and_pruned_zeros_survive_quantization(digits):
    from torch.ao.quantization import convert, fuse_modules, get_default_qconfig, prepare

    float_model = prune(
        create_model("tiny_cnn", dataset=digits, seed=0), strategy="layer_weight", compression=4
    ).model
    float_model = remove_masks(float_model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = fuse_modules(copy.deepcopy(float_model), fusion_groups(float_model))
        qmodel.qconfig = get_default_qconfig("x86")
        qmodel = prepare(qmodel)
        qmodel(float_model.example_input(16))
        qmodel = convert(qmodel)
    assert layer_macs(qmodel) == layer_macs(float_model)
    float_table, int8_table = weight_table(float_model), weight_table(qmodel)
    assert int8_table["layer"].tolist() == float_table["layer"].tolist()
    assert int8_table["nonzero"].tolist() == float_table["nonzero"].tolist()  # zeros quantize to zero
    params, nonzero = count_parameters(qmodel)
    int8_layers = [m for m in qmodel.modules() if is_quantized_layer(m)]
    assert len(int8_layers) == 7  # 6 convs with BatchNorm folded in, and the classifier
    assert params == int8_table["params"].sum() + sum(m.bias().numel() for m in int8_layers)
    row = measure(qmodel, digits, baseline=float_model)
    assert row["top1"] == evaluate(qmodel, digits.test, Normalizer(digits.mean, digits.std))["top1"]
    assert row["activations_nonzero"] > 0
    assert row["macs_nonzero"] == layer_table(float_model)["macs_nonzero"].sum()
