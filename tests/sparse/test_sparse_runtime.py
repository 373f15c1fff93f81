"""Conversion, the per-layer autotune and its cache, the ``sparse`` runtime and its failure paths."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.nn.intrinsic.qat import freeze_bn_stats

import shrinkviz.sparse as sp
from shrinkviz.deploy.runtimes import RUNTIMES, make_runner
from shrinkviz.metrics.latency import LatencyError, measure_latency
from shrinkviz.models import create_model
from shrinkviz.sparse import autotune, blocks, build
from shrinkviz.sparse.fuse import SparseResidual
from shrinkviz.sparse.int8 import vector_step
from shrinkviz.sparse.modules import SparseConv2d, SparseLinear
from shrinkviz.techniques.prune import prune

pytestmark = pytest.mark.skipif(
    build.compiler() is None, reason="no C compiler: the sparse kernels cannot be built"
)
RTOL, ATOL = 1e-4, 1e-5  # see test_sparse_kernels.py


@pytest.fixture
def fbgemm_engine():
    """torch.ao's fbgemm kernels, whose arithmetic the INT8 kernels reproduce bit for bit (see
    test_sparse_kernels.py)."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = old


def cost_timer(dense, sparse):
    """Deterministic stand-in for timing: dense costs its weight's size, sparse 3x its nonzeros."""
    layer = sparse.func
    return float(torch.Size(layer.weight_shape).numel()), 3.0 * layer.nnz_index.shape[0]


def never(dense, sparse):
    raise AssertionError("timer called although the decision was cached")


@pytest.mark.parametrize(
    "arch,shape,batch,strategy",
    [
        ("resnet20", (3, 32, 32), 1, "global_weight"),
        ("resnet18", (3, 16, 16), 2, "global_weight"),
        ("vgg16_bn", (3, 32, 32), 1, "global_weight"),
        ("mnistnet", (1, 28, 28), 3, "global_weight"),
        ("lenet5", (1, 28, 28), 1, "global_weight"),
        ("resnet20", (3, 16, 16), 2, "block_4x1"),
    ],
)
def test_converted_model_matches_masked_model(arch, shape, batch, strategy):
    model = prune(
        create_model(arch, input_shape=shape, seed=0), strategy=strategy, compression=8
    ).model.eval()
    x = torch.randn(batch, *shape)
    fast, report = sp.convert(model, x, timer=lambda d, s: (1.0, 0.0), cache=False)
    sparse_mods = [m for m in fast.modules() if isinstance(m, SparseConv2d | SparseLinear)]
    assert len(sparse_mods) == len(report.sparse_layers) > 0
    if strategy == "block_4x1":  # every layer with a multiple of 4 output channels runs the block kernel
        assert all(m.block4 for m in sparse_mods if m.weight_shape[0] % 4 == 0)
    assert report.summary() == f"sparse: {len(report.sparse_layers)}/{len(report.notes)} layers sparse (FP32)"
    if arch.startswith("resnet"):  # every block's add + ReLU moved into its last conv's epilogue
        blocks = sum(type(m).__name__ == "Residual" for m in model.modules())
        assert sum(isinstance(m, SparseResidual) for m in fast.modules()) == blocks > 0
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), model(x), rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(copy.deepcopy(fast)(x), model(x), rtol=RTOL, atol=ATOL)


def _int8_model(arch: str, shape: tuple[int, int, int], strategy: str = "global_weight") -> nn.Module:
    from shrinkviz.techniques.quant import convert, prepare_qat

    torch.manual_seed(0)
    model = prune(create_model(arch, input_shape=shape, seed=0), strategy=strategy, compression=6).model
    calib = torch.randn(16, *shape)
    model.train()
    with torch.no_grad():
        model(calib)  # BN statistics of the data, as training would give
    qat = prepare_qat(model.eval(), check=False)
    qat.apply(freeze_bn_stats)
    qat.train()
    with torch.no_grad():
        qat(calib)
    return convert(qat)


@pytest.mark.parametrize("arch,shape", [("resnet20", (3, 16, 16)), ("mnistnet", (1, 28, 28))])
def test_int8_model_bit_exact(fbgemm_engine, arch, shape):
    q = _int8_model(arch, shape)
    x = torch.randn(2, *shape)
    fast, report = sp.convert(q, x, timer=lambda d, s: (1.0, 0.0), cache=False)
    assert report.dtype == "int8" and report.sparse_layers
    assert not any(type(m).__name__ == "ConvBNAct" for m in fast.modules())  # folded wrappers are gone
    if arch.startswith("resnet") and vector_step():  # each block's quantized add + ReLU: in its last conv
        blocks = sum(type(m).__name__ == "Residual" for m in q.modules())
        assert sum(isinstance(m, SparseResidual) for m in fast.modules()) == blocks > 0
    with torch.inference_mode():
        assert torch.equal(fast(x), q(x))  # dequantized outputs of bit-identical uint8 tensors
        assert torch.equal(copy.deepcopy(fast)(x), q(x))


def _kernel_timer(lanes_s: float):
    """Sparse always beats dense; between the two sparse kernels, lanes costs ``lanes_s`` against 1.0."""

    def timer(first, second):
        if isinstance(first.func, SparseConv2d):  # b4i8 (second) against the lane kernel (first)
            return lanes_s, 1.0
        return 1.0, 0.0

    return timer


@pytest.mark.skipif(not blocks.b4i8_available(), reason="this CPU lacks AVX512-VNNI: no b4i8 kernel here")
@pytest.mark.parametrize("lanes_s,kernel", [(2.0, "b4i8"), (0.5, "lanes")])
def test_int8_block_model_picks_the_faster_kernel(fbgemm_engine, lanes_s, kernel):
    q = _int8_model("resnet20", (3, 16, 16), strategy="block_1x4")
    x = torch.randn(2, 3, 16, 16)
    fast, report = sp.convert(q, x, timer=_kernel_timer(lanes_s), cache=False)
    convs = [m for m in fast.modules() if isinstance(m, SparseConv2d)]
    assert len(convs) == len(report.sparse_layers) - 1 > 0  # and the classifier, a SparseLinear
    assert {m.kernel for m in convs} == {kernel}
    notes = [n for n in report.notes if n.choice == "sparse" and n.kind.startswith("Conv")]
    assert len(notes) == len(convs) and all(f"; kernel {kernel}: b4i8 (VNNI)" in n.reason for n in notes)
    fused = sum(isinstance(m, SparseResidual) for m in fast.modules())
    assert fused == (9 if vector_step() else 0)  # resnet20's blocks
    with torch.inference_mode():
        assert torch.equal(fast(x), q(x))


def test_autotune_choice_follows_the_timings():
    net = nn.Sequential(
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 8, 1)
    )
    _mask(net[0].weight, 0.01)  # 99% sparse: sparse costs 3% of dense
    _mask(net[2].weight, 0.9)  # 10% sparse: sparse costs 270% of dense
    fast, report = sp.convert(net, torch.randn(1, 64, 8, 8), timer=cost_timer, cache=False)
    choices = {n.name: (n.choice, n.reason.split(":")[0]) for n in report.notes}
    assert choices == {
        "0": ("sparse", "sparse faster"),
        "2": ("dense", "dense faster"),
        "3": ("dense", "no zero weights"),
    }
    assert isinstance(fast[0], SparseConv2d) and type(fast[2]) is nn.Conv2d


def _mask(weight: torch.Tensor, density: float) -> None:
    with torch.no_grad():
        weight.mul_(torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) < density)


def test_decision_cache_round_trip(tmp_path: Path):
    cache = autotune.DecisionCache(tmp_path / "autotune.json")
    key = autotune.layer_key("conv", "fp32", "in=1x8x4x4", 0.1234)
    assert "density~12/100" in key and build.kernel_id() in key
    first = autotune.decide(key, lambda: None, lambda: None, timer=lambda d, s: (2.0, 1.0), cache=cache)
    assert first == autotune.Decision("sparse", 2.0, 1.0, cached=False)
    assert json.loads((tmp_path / "autotune.json").read_text()) == {
        key: {"choice": "sparse", "dense_s": 2.0, "sparse_s": 1.0}
    }
    again = autotune.decide(
        key, lambda: None, lambda: None, timer=never, cache=autotune.DecisionCache(tmp_path / "autotune.json")
    )
    assert again == autotune.Decision("sparse", 2.0, 1.0, cached=True)


def test_convert_reuses_cached_decisions(tmp_path: Path):
    model = prune(create_model("tiny_cnn", seed=0), strategy="global_weight", compression=4).model
    x = torch.zeros(1, *model.input_shape)
    cache = autotune.DecisionCache(tmp_path / "a.json")
    _, first = sp.convert(model, x, timer=cost_timer, cache=cache)
    _, second = sp.convert(model, x, timer=never, cache=autotune.DecisionCache(tmp_path / "a.json"))
    assert [n.choice for n in first.notes] == [n.choice for n in second.notes]
    assert all(n.reason.endswith("(cached)") for n in second.notes if n.dense_ms is not None)


def test_interleaved_timer_returns_per_call_seconds():
    calls = {"d": 0, "s": 0}
    dense_s, sparse_s = autotune.interleaved_timer(
        lambda: calls.__setitem__("d", calls["d"] + 1),
        lambda: calls.__setitem__("s", calls["s"] + 1),
        rounds=3,
    )
    assert dense_s > 0 and sparse_s > 0 and calls["d"] == calls["s"] >= 5


def test_runner_detail_and_report():
    assert "sparse" in RUNTIMES
    model = prune(
        create_model("resnet8", input_shape=(3, 16, 16), seed=0), strategy="global_weight", compression=8
    ).model
    x = torch.randn(1, 3, 16, 16)
    runner = make_runner(model, "sparse", x, 1)
    report = sp.report_of(runner)
    assert runner.runtime == "sparse" and runner.dtype == "fp32"
    assert runner.detail == report.summary()
    assert len(report.notes) == sum(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())
    with torch.inference_mode():
        torch.testing.assert_close(runner.call(), model.eval()(x), rtol=RTOL, atol=ATOL)


def test_spec_accepts_sparse_runtime():
    from shrinkviz.experiments.specs import LatencySpec

    assert LatencySpec(runtimes=["eager", "sparse"]).runtimes == ("eager", "sparse")


def test_dense_model_is_a_readable_error():
    model = create_model("tiny_cnn", seed=0)
    with pytest.raises(sp.SparseConversionError, match="no sparse layer.*prune it first"):
        make_runner(model, "sparse", torch.zeros(1, *model.input_shape), 1)
    with pytest.raises(LatencyError, match="SparseConversionError: TinyCNN has no sparse layer"):
        measure_latency(model, "sparse", rounds=1, min_time_s=0)


def test_uncovered_dtype_and_fake_quant_are_readable_errors():
    model = prune(create_model("tiny_cnn", seed=0), strategy="global_weight", compression=4).model
    with pytest.raises(sp.SparseConversionError, match="dtype.*float64.*model.float"):
        sp.convert(model.double(), torch.zeros(1, *model.input_shape, dtype=torch.float64))
    from shrinkviz.techniques.quant import prepare_qat

    with pytest.raises(sp.SparseConversionError, match="fake-quant"):
        sp.convert(prepare_qat(model.float(), check=False), torch.zeros(1, *model.input_shape))


def test_unconvertible_layer_is_kept_dense_with_a_note():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 4, 3, padding=1))
    _mask(net[0].weight, 0.1)
    _mask(net[1].weight, 0.1)
    fast, report = sp.convert(net, torch.randn(1, 4, 6, 6), timer=lambda d, s: (1.0, 0.0), cache=False)
    assert report.notes[0].choice == "dense" and "not convertible: padding=" in report.notes[0].reason
    assert report.sparse_layers == ["1"]
    torch.testing.assert_close(
        fast(torch.ones(1, 4, 6, 6)), net(torch.ones(1, 4, 6, 6)).detach(), rtol=RTOL, atol=ATOL
    )


def test_other_layer_kinds_are_noted():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ConvTranspose2d(4, 2, 3, padding=1))
    _mask(net[0].weight, 0.1)
    _mask(net[1].weight, 0.1)
    _, report = sp.convert(net, torch.randn(1, 2, 5, 5), timer=lambda d, s: (1.0, 0.0), cache=False)
    notes = {n.name: (n.kind, n.choice, n.reason) for n in report.notes}
    assert list(notes) == ["0", "1"] and notes["0"][1] == "sparse"
    assert notes["1"] == (
        "ConvTranspose2d",
        "dense",
        "not convertible: the sparse kernels cover Conv2d and Linear only",
    )
    assert report.summary() == "sparse: 1/2 layers sparse (FP32)"


@pytest.fixture
def no_kernels(monkeypatch, tmp_path):
    """The runtime as on a machine where the kernels cannot be built (fresh cache, bad compiler)."""
    monkeypatch.setenv("SHRINKVIZ_CACHE", str(tmp_path))
    build.reset()
    yield monkeypatch
    monkeypatch.undo()
    build.reset()


def test_no_compiler_reports_unavailable(no_kernels):
    no_kernels.setenv("SHRINKVIZ_SPARSE_CC", "/nonexistent/cc")
    ok, reason = sp.availability()
    assert (
        not ok and reason.startswith("sparse runtime unavailable: no C compiler found") and "\n" not in reason
    )
    model = prune(create_model("tiny_cnn", seed=0), strategy="global_weight", compression=4).model
    x = torch.zeros(1, *model.input_shape)
    with pytest.raises(sp.SparseUnavailableError, match="no C compiler"):
        make_runner(model, "sparse", x, 1)
    with pytest.raises(LatencyError, match="SparseUnavailableError: sparse runtime unavailable"):
        measure_latency(model, "sparse", rounds=1, min_time_s=0)
    assert make_runner(model, "eager", x, 1).call().shape == (1, 10)  # the other runtimes are untouched


def test_failing_build_reports_unavailable(no_kernels, tmp_path):
    fake = tmp_path / "badcc"
    fake.write_text("#!/bin/sh\necho 'fatal error: simulated failure' >&2\nexit 1\n")
    fake.chmod(0o755)
    no_kernels.setenv("SHRINKVIZ_SPARSE_CC", str(fake))
    ok, reason = sp.availability()
    assert not ok and "building the kernels with" in reason and "simulated failure" in reason
    assert not list(tmp_path.glob("sparse/*.so"))  # nothing half-written left in the cache


def test_int8_sides_timed_on_their_producers_layouts(fbgemm_engine):
    """torch.ao's INT8 convs emit channels-last tensors, the sparse kernels contiguous ones: each side of a
    layer's decision is timed on the layout its own kind of producer hands it."""
    q = _int8_model("resnet20", (3, 16, 16))
    seen = []

    def recording(dense, sparse):
        seen.append((dense.args[0], sparse.args[0]))
        return 1.0, 0.0

    sp.convert(q, torch.randn(1, 3, 16, 16), timer=recording, cache=False)
    assert seen and all(s.is_contiguous() for _, s in seen)
    assert any(not d.is_contiguous() and d.is_contiguous(memory_format=torch.channels_last) for d, _ in seen)
    assert all(torch.equal(d.int_repr(), s.int_repr()) for d, s in seen)  # the same values
