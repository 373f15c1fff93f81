"""Structured channel pruning: smaller dense models equal to the masked model with those channels zeroed."""

from __future__ import annotations

import copy

import pytest
import torch
from prune_helpers import assert_same_state, state
from torch import nn

from shrinkviz.loop.train import TrainConfig, fit
from shrinkviz.metrics.counts import count_parameters, total_macs
from shrinkviz.models import ShrinkNet, create_model
from shrinkviz.models.base import ConvBNAct
from shrinkviz.techniques.prune import channel_groups, get_masks, plan_channels, prune, prune_channels

SHAPES = {
    "tiny_cnn": (1, 8, 8),
    "tiny_mlp": (1, 8, 8),
    "lenet5": (1, 28, 28),
    "mnistnet": (1, 28, 28),
    "resnet20": (3, 16, 16),
}


def _model(name: str) -> ShrinkNet:
    """A registry model with random BatchNorm statistics and affine terms, so that zeroing matters."""
    model = create_model(name, input_shape=SHAPES[name], seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=gen))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            elif isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
    return model.eval()


def _zero_removed(model: nn.Module, plans) -> nn.Module:
    """The masked equivalent: removed channels keep their place but produce exact zeros."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for plan in plans:
            dropped = torch.ones(plan.group.channels, dtype=torch.bool)
            dropped[plan.kept] = False
            for name in plan.group.producers + plan.group.norms:
                module = masked.get_submodule(name)
                module.weight[dropped] = 0
                if module.bias is not None:
                    module.bias[dropped] = 0
    return masked


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_pruned_model_is_smaller_and_equals_the_masked_model(name, norm):
    model = _model(name)
    plans = plan_channels(model, keep=0.5, norm=norm)
    small = prune_channels(model, keep=0.5, norm=norm).model.eval()
    masked = _zero_removed(model, plans)
    x = model.example_input(4)
    torch.testing.assert_close(small(x), masked(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(small(x), model(x), atol=1e-3)  # the removed channels did matter
    assert count_parameters(small)[0] < count_parameters(model)[0]
    assert total_macs(small) < total_macs(model)
    for plan in plans:
        assert len(plan.kept) == max(1, round(plan.group.channels / 2))
        for producer in plan.group.producers:
            weight = small.get_submodule(producer).weight
            assert weight.shape[0] == len(plan.kept)


def test_resnet_groups_tie_residual_channels_and_keep_every_shape_consistent():
    model = create_model("resnet20", input_shape=(3, 32, 32), seed=0)
    groups = channel_groups(model)
    residual = [g for g in groups if g.residual]
    assert [g.channels for g in residual] == [16, 32, 64]
    assert residual[0].producers == (
        "features.0.conv",
        "features.1.body.1.conv",
        "features.2.body.1.conv",
        "features.3.body.1.conv",
    )
    assert "features.4.shortcut.conv" in residual[0].consumers and "classifier" in residual[2].consumers
    assert sum(not g.residual for g in groups) == 9  # one internal group per basic block
    small = prune_channels(model, keep=0.5).model
    assert small.classifier.in_features == 32 and small.features[0].conv.out_channels == 8
    assert small.features[1].body[0].bn.num_features == 8
    # ResNet-18 at half channels: Torch-Pruning's reference sizes (11.17M -> 2.80M params, 557M -> 140M MACs)
    resnet18 = create_model("resnet18", input_shape=(3, 32, 32), seed=0)
    half = prune_channels(resnet18, keep=0.5, inplace=True).model
    assert count_parameters(half)[0] == 2_797_610 and total_macs(half) == 139_299_328


def test_internal_only_pruning_leaves_residual_groups_whole():
    model = create_model("resnet20", input_shape=(3, 16, 16), seed=0)
    small = prune_channels(model, keep=0.25, prune_residual=False).model
    assert small.features[0].conv.out_channels == 16 and small.classifier.in_features == 64
    body = small.features[1].body
    assert body[0].conv.out_channels == 4 and body[1].conv.in_channels == 4


def test_channel_scores_sum_the_norms_of_a_groups_producers():
    model = create_model("tiny_mlp", input_shape=(1, 4, 4), seed=0)
    with torch.no_grad():
        weight = model.features[1].linear.weight
        weight.copy_(torch.arange(weight.numel(), dtype=torch.float32).view_as(weight).flip(0) / 100)
    (plan,) = plan_channels(model, keep=0.25)
    assert plan.kept.tolist() == list(range(8))  # the flipped rows 0..7 have the largest norms


def test_pruning_masks_are_sliced_along_and_training_keeps_working(digits):
    data = digits.subset(train=64, val=32, test=32)
    masked = prune(
        create_model("tiny_cnn", dataset=data, seed=0), strategy="layer_weight", compression=3
    ).model
    small = prune_channels(masked, keep=0.5).model
    for name, mask in get_masks(small).items():
        assert mask.shape == small.get_parameter(name).shape
        assert torch.equal(small.get_parameter(name) != 0, mask)
    fit(small, data, TrainConfig(epochs=1, batch_size=32, lr=0.05, augment="none"), progress=False)
    for name, mask in get_masks(small).items():
        assert int(small.get_parameter(name)[~mask].count_nonzero()) == 0


class _Grouped(ShrinkNet):
    arch = "grouped_test"

    def __init__(self, input_shape=(2, 8, 8), num_classes=10) -> None:
        super().__init__(input_shape, num_classes)
        self.features = nn.Sequential(
            ConvBNAct(input_shape[0], 4, 3, padding=1), nn.Conv2d(4, 4, 3, groups=2), nn.AdaptiveAvgPool2d(1)
        )
        self.classifier = nn.Linear(4, num_classes)


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(x) * 2


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: _Grouped(), r"'features.1' \(Conv2d\).*groups=2"),
        (lambda: nn.Sequential(nn.Conv2d(1, 2, 3)), "not a registry model"),
        (
            lambda: _with(nn.Sequential(ConvBNAct(1, 4, 3), _Custom(), nn.AdaptiveAvgPool2d(1)), 4),
            r"'features.1' \(_Custom\).*not one of the blocks",
        ),
        (
            lambda: _with(nn.Sequential(ConvBNAct(1, 4, 3), nn.Linear(6, 4), nn.AdaptiveAvgPool2d(1)), 4),
            r"'features.1' \(Linear\).*4-D feature map",
        ),
    ],
)
def test_layers_that_cannot_be_shrunk_consistently_are_named(build, match):
    model = build()
    before = state(model)
    with pytest.raises(ValueError, match=match):
        prune_channels(model, keep=0.5, inplace=True)
    assert_same_state(model, before)


def _with(features: nn.Module, width: int) -> ShrinkNet:
    model = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=0)
    model.features, model.classifier = features, nn.Linear(width, 10)
    return model


def test_quantization_prepared_models_are_refused_with_the_way_out():
    from torch.ao.quantization import fuse_modules

    from shrinkviz.models import fusion_groups

    model = create_model("tiny_cnn", seed=0).eval()
    fused = fuse_modules(model, fusion_groups(model))
    with pytest.raises(ValueError, match="before fusion or quantization"):
        prune_channels(fused)


@pytest.mark.parametrize("kwargs", [{"keep": 0}, {"keep": 1.5}, {"keep": float("nan")}, {"norm": "l3"}])
def test_bad_arguments_are_rejected_and_nothing_is_modified(kwargs):
    model = create_model("tiny_cnn", seed=0)
    before = state(model)
    with pytest.raises(ValueError, match="keep=|norm="):
        prune_channels(model, inplace=True, **{"keep": 0.5, **kwargs})
    assert_same_state(model, before)


def test_custom_architectures_built_from_the_blocks_are_supported():
    class Wide(ShrinkNet):
        arch = "wide_test"

        def __init__(self, input_shape=(1, 8, 8), num_classes=10) -> None:
            super().__init__(input_shape, num_classes)
            self.features = nn.Sequential(
                ConvBNAct(input_shape[0], 12, 3, padding=1), nn.MaxPool2d(2), nn.Flatten()
            )
            self.classifier = nn.Linear(12 * 16, num_classes)

    model = Wide().eval()
    plans = plan_channels(model, keep=1 / 3)
    small = prune_channels(model, keep=1 / 3).model.eval()
    assert small.classifier.in_features == 4 * 16  # 16 flattened positions per kept channel
    x = model.example_input(3)
    torch.testing.assert_close(small(x), _zero_removed(model, plans)(x), rtol=1e-4, atol=1e-5)
