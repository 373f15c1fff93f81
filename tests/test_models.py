from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shrinkviz.models import InputShapeError, available_models, create_model, fusion_groups, register_model
from shrinkviz.models.base import Features

ALL = available_models()


def test_registry_lists_every_standard_architecture():
    assert set(ALL) >= {
        "lenet5",
        "mnistnet",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet18",
        "vgg16_bn",
        "wrn28_10",
        "tiny_cnn",
        "tiny_mlp",
    }


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown model .resnet1000.; did you mean .resnet110.*valid: lenet5, mnistnet"
    ):
        create_model("resnet1000")


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("wrn28_10", "resnet110")])
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_every_model_takes_any_channels_resolution_and_classes(name, shape, classes):
    model = create_model(name, input_shape=shape, num_classes=classes).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, classes)


@pytest.mark.parametrize("name", ["wrn28_10", "resnet110"])
def test_big_models_build_on_small_inputs(name):
    model = create_model(name, input_shape=(3, 8, 8), num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize(
    "name,params",
    [
        ("resnet18", 11_173_962),  # the standard CIFAR ResNet-18 count
        ("mnistnet", 431_080),  # ShrinkBench's MnistNet: 20*25+20 + 50*500+50 + 800*500+500 + 500*10+10
        ("lenet5", 61_706),
    ],
)
def test_parameter_counts_match_the_literature(name, params):
    shape = (3, 32, 32) if name == "resnet18" else (1, 28, 28)
    assert sum(p.numel() for p in create_model(name, input_shape=shape).parameters()) == params


def test_wrong_input_shape_names_model_and_expected_shape():
    model = create_model("resnet20", input_shape=(3, 32, 32))
    with pytest.raises(
        InputShapeError, match=r"resnet20 expects inputs of shape \(N, 3, 32, 32\), got \(2, 1, 28, 28\)"
    ):
        model(torch.randn(2, 1, 28, 28))


def test_shape_a_model_cannot_take_is_rejected_at_build_time():
    with pytest.raises(ValueError, match="mnistnet cannot take inputs of shape"):
        create_model("mnistnet", input_shape=(1, 8, 8))


def test_seeded_initialisation_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=5)
    b = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=5)
    c = create_model("tiny_cnn", input_shape=(1, 8, 8), seed=6)
    assert torch.equal(torch.random.get_rng_state(), before)
    for (ka, va), (_, vb), (_, _vc) in zip(
        a.state_dict().items(), b.state_dict().items(), c.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(va, vb, msg=ka)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


@pytest.mark.parametrize("name", ["resnet20", "mnistnet", "vgg16_bn", "tiny_cnn"])
def test_fusion_groups_name_real_conv_bn_relu_modules(name):
    model = create_model(name, input_shape=(3, 32, 32))
    modules = dict(model.named_modules())
    groups = fusion_groups(model)
    assert groups
    for group in groups:
        kinds = [type(modules[n]) for n in group]
        assert kinds[0] in (nn.Conv2d, nn.Linear)
        assert all(k in (nn.BatchNorm2d, nn.ReLU) for k in kinds[1:])


def test_models_fuse_prepare_qat_and_convert_in_eager_mode():
    """Built for INT8 QAT: the eager fuse -> prepare_qat -> convert round trip works and runs."""
    import warnings

    from torch.ao import quantization as tq

    model = create_model("resnet8", input_shape=(3, 16, 16)).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao eager mode is deprecated upstream
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")  # its x86 observers
        fused = tq.fuse_modules_qat(model, fusion_groups(model))
        fused.qconfig = tq.get_default_qat_qconfig("x86")
        prepared = tq.prepare_qat(fused)
        prepared(torch.randn(4, 3, 16, 16))
        converted = tq.convert(prepared.eval())
        out = converted(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10) and out.dtype == torch.float32


def test_register_model():
    from shrinkviz.models.architectures import TinyMLP

    register_model("my_mlp", TinyMLP)
    assert create_model("my_mlp", input_shape=(1, 4, 4)).input_shape == (1, 4, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("my_mlp", TinyMLP)


def _written_order(model):
    twin = copy.deepcopy(model)
    twin.features.__class__ = nn.Sequential  # the same modules, run as written
    return twin


def _train(model, steps=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    model.train()
    for _ in range(steps):
        x = torch.randn(16, *model.input_shape, generator=g)
        y = torch.randint(0, model.num_classes, (16,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize(
    "name, shape, layout",
    [
        ("mnistnet", (1, 28, 28), "channels_last"),
        ("lenet5", (1, 28, 28), "contiguous"),
        ("vgg16_bn", (3, 20, 20), "channels_last"),
    ],  # fmt: skip
)
def test_relu_after_pool_trains_to_the_same_weights_bit_for_bit(name, shape, layout):
    model = create_model(name, input_shape=shape, seed=0)
    assert isinstance(model.features, Features)
    plain = _written_order(model)
    if layout == "channels_last":
        model, plain = (m.to(memory_format=torch.channels_last) for m in (model, plain))
    _train(model), _train(plain)
    ours, theirs = model.state_dict(), plain.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_relu_after_pool_only_where_nothing_can_see_the_order():
    model = create_model("mnistnet", input_shape=(1, 28, 28), seed=0).train()
    x = torch.randn(2, 1, 28, 28)
    net = model.features
    assert net._pool_next(net[0], net[1]) and not net._pool_next(net[1], net[2])
    seen = []
    handle = net[0].act.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    assert not net._pool_next(net[0], net[1])
    model(x).sum().backward()
    assert seen == [(2, 20, 24, 24)]  # the hook saw the ReLU where it is written: before the pool
    handle.remove()
    fused = copy.deepcopy(model)
    fused.features[0].act = nn.Identity()  # what eager fusion leaves (the ReLU inside the conv)
    assert not fused.features._pool_next(fused.features[0], fused.features[1])
    graph = torch.fx.symbolic_trace(model)  # traced in training mode: INT8 fusion reads this order
    order = [n.target for n in graph.graph.nodes if n.op == "call_module"][:3]
    assert order == ["features.0.conv", "features.0.act", "features.1"]
    assert torch.equal(graph(x), model(x))
