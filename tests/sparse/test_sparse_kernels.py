"""The sparse kernels against the dense PyTorch layers: FP32 within float32 rounding, INT8 bit-exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from torch import nn

from shrinkviz.sparse.blocks import b4i8_available, is_block1x4
from shrinkviz.sparse.build import compiler
from shrinkviz.sparse.modules import SparseConv2d, SparseLinear

# Without any C compiler the runtime is unavailable by design (tested in test_sparse_runtime.py); with
# one, a failing build must fail these tests rather than skip them.
pytestmark = pytest.mark.skipif(
    compiler() is None, reason="no C compiler: the sparse kernels cannot be built"
)

# FP32: the kernels sum the same products in another order (and fuse multiply-adds), so results differ
# from oneDNN's by float32 rounding: about 1e-7 relative per term over up to 4608 terms of O(1) size,
# i.e. ~1e-6 absolute at worst here. rtol 1e-4 as specified; atol 1e-5 covers outputs near zero, where a
# relative bound is meaningless, and is still 100x below the smallest output magnitude that matters.
RTOL, ATOL = 1e-4, 1e-5

# (cin, cout, kernel, stride, padding, dilation, groups, height, width): every geometry of the registry
# (ResNet 3x3 s1/s2 and 1x1 s2 shortcuts, VGG 3x3, LeNet/MnistNet 5x5 with and without padding) plus
# depthwise, grouped, dilated and non-square cases.
CONVS = [
    (3, 16, 3, 1, 1, 1, 1, 8, 8),
    (16, 32, 3, 2, 1, 1, 1, 9, 9),
    (16, 32, 1, 2, 0, 1, 1, 8, 8),
    (1, 6, 5, 1, 2, 1, 1, 12, 12),
    (6, 16, 5, 1, 0, 1, 1, 14, 14),
    (12, 12, 3, 1, 1, 1, 12, 7, 7),
    (12, 12, 3, 2, 1, 1, 12, 9, 9),
    (8, 12, 3, 1, 1, 1, 4, 6, 10),
    (8, 8, 3, 1, 2, 2, 1, 9, 7),
    (8, 16, 3, 2, 2, 2, 2, 11, 11),
    (64, 64, 3, 1, 1, 1, 1, 4, 4),
]


def _sparse_(weight: torch.Tensor, density: float, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight.mul_(torch.rand(weight.shape, generator=gen) < density)


@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("bias,relu,batch", [(True, False, 1), (False, True, 3)])
def test_conv_fp32_matches_dense(cfg, bias, relu, batch):
    cin, cout, k, s, p, d, g, h, w = cfg
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, s, p, d, g, bias=bias)
    _sparse_(conv.weight, 0.3)
    x = torch.randn(batch, cin, h, w)
    want = conv(x).relu() if relu else conv(x)
    got = SparseConv2d.from_dense(conv, relu=relu)(x)
    torch.testing.assert_close(got, want.detach(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("density", [0.0, 0.01, 1.0])
def test_conv_fp32_extreme_densities(density):
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 8, 3, 1, 1)
    _sparse_(conv.weight, density)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(SparseConv2d.from_dense(conv)(x), conv(x).detach(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batch", [1, 4])
def test_linear_fp32_matches_dense(batch):
    torch.manual_seed(0)
    lin = nn.Linear(50, 20)
    _sparse_(lin.weight, 0.2)
    x = torch.randn(batch, 50)
    torch.testing.assert_close(SparseLinear.from_dense(lin)(x), lin(x).detach(), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(
        SparseLinear.from_dense(lin, relu=True)(x), lin(x).relu().detach(), rtol=RTOL, atol=ATOL
    )


def test_linear_keeps_leading_dims():
    lin = nn.Linear(6, 3)
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(SparseLinear.from_dense(lin)(x), lin(x).detach(), rtol=RTOL, atol=ATOL)


def _blocks_4x1(weight: torch.Tensor, density: float) -> None:
    """Zero ``weight`` in 4x1 blocks along output channels (what ``block_4x1`` pruning leaves)."""
    gen = torch.Generator().manual_seed(0)
    keep = torch.rand((weight.shape[0] // 4, 1, *weight.shape[1:]), generator=gen) < density
    with torch.no_grad():
        weight.mul_(keep.expand(-1, 4, *weight.shape[1:]).reshape(weight.shape))


@pytest.mark.parametrize(
    "cfg",
    [c for c in CONVS if c[1] % 4 == 0 and (c[1] // c[6]) % 4 == 0],
    ids=lambda c: "x".join(map(str, c)),
)
def test_conv_block4_kernel_matches_dense(cfg):
    cin, cout, k, s, p, d, g, h, w = cfg
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, s, p, d, g)
    _blocks_4x1(conv.weight, 0.3)
    fast = SparseConv2d.from_dense(conv, relu=True)
    x = torch.randn(2, cin, h, w)
    got = fast(x)
    assert fast.block4 and next(iter(fast._plans.values())).group == 4
    torch.testing.assert_close(got, conv(x).relu().detach(), rtol=RTOL, atol=ATOL)


def test_block4_only_for_block_patterns():
    conv = nn.Conv2d(8, 8, 3)
    _sparse_(conv.weight, 0.3)
    assert not SparseConv2d.from_dense(conv).block4  # unstructured
    grouped = nn.Conv2d(8, 8, 3, groups=4)  # 2 output channels per group: blocks would span groups
    _blocks_4x1(grouped.weight, 0.5)
    assert not SparseConv2d.from_dense(grouped, relu=False).block4
    lin = nn.Linear(16, 8)
    _blocks_4x1(lin.weight, 0.4)
    fast = SparseLinear.from_dense(lin)
    x = torch.randn(3, 16)
    assert fast.block4
    torch.testing.assert_close(fast(x), lin(x).detach(), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(fast(x[:1]), lin(x[:1]).detach(), rtol=RTOL, atol=ATOL)


def test_conv_residual_added_before_relu():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, 2, 1)
    _sparse_(conv.weight, 0.5)
    x, res = torch.randn(2, 4, 7, 7), torch.randn(2, 6, 4, 4)
    got = SparseConv2d.from_dense(conv, relu=True)(x, residual=res)
    torch.testing.assert_close(got, (conv(x) + res).relu().detach(), rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match="residual of shape"):
        SparseConv2d.from_dense(conv)(x, residual=res[:, :3])


def test_exactness_bound_detects_large_weight_sums(x86_engine):
    mod = _qconv(nnq.Conv2d, (512, 8, 3, 1, 1, 1, 1, 4, 4), 1.0)
    w = torch.full((8, 512, 3, 3), 1.0)  # 4608 weights of int value 127 per channel: 255 * 585216 > 2**24
    qw = torch.quantize_per_channel(
        w, torch.full((8,), 1 / 127).double(), torch.zeros(8, dtype=torch.long), 0, torch.qint8
    )
    mod.set_weight_bias(qw, None)
    assert not SparseConv2d.from_quantized(mod).use_kernel("lanes").exact  # dense weights are 1x4 blocks too
    assert SparseConv2d.from_dense(nn.Conv2d(2, 2, 1)).exact


def test_conv_rejects_reflect_padding():
    with pytest.raises(ValueError, match="zero padding"):
        SparseConv2d.from_dense(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))


def _qconv(cls, cfg, density):
    cin, cout, k, s, p, d, g, _, _ = cfg
    torch.manual_seed(0)
    w = torch.randn(cout, cin // g, k, k)
    _sparse_(w, density)
    scales = torch.rand(cout) * 0.02 + 0.005
    qw = torch.quantize_per_channel(w, scales.double(), torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    mod = cls(cin, cout, k, stride=s, padding=p, dilation=d, groups=g)
    mod.set_weight_bias(qw, torch.randn(cout) * 0.1)
    mod.scale, mod.zero_point = 0.05, 64
    return mod


def _quint8_below_128(shape, scale, zero_point):
    """Activations whose uint8 values stay below 128, so no pair of uint8 x int8 products reaches 2**15."""
    ints = torch.randint(0, 128, shape, dtype=torch.uint8)
    return torch._make_per_tensor_quantized_tensor(ints, scale, zero_point)


@pytest.mark.parametrize("layer", ["linear", *(f"conv{i}" for i in range(4))])
def test_int8_bit_exact_below_fbgemm_saturation(layer):
    """Bit for bit with torch.ao's fbgemm on every CPU, AVX2 without VNNI included, where fbgemm's int16 pair
    sums cannot saturate (full-range activations: the tests taking ``exact_int8_reference``)."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        torch.manual_seed(1)
        if layer == "linear":
            w = torch.randn(12, 40)
            _sparse_(w, 0.25)
            scales = (torch.rand(12) * 0.02 + 0.005).double()
            qw = torch.quantize_per_channel(w, scales, torch.zeros(12, dtype=torch.long), 0, torch.qint8)
            mod = nnq.Linear(40, 12)
            mod.set_weight_bias(qw, torch.randn(12) * 0.1)
            mod.scale, mod.zero_point = 0.1, 100
            x = _quint8_below_128((3, 40), 0.03, 64)
            fast = SparseLinear.from_quantized(mod)
        else:
            cfg = CONVS[int(layer[-1])]
            mod = _qconv(nnq.Conv2d, cfg, 0.3)
            x = _quint8_below_128((2, cfg[0], cfg[7], cfg[8]), 0.04, 60)
            fast = SparseConv2d.from_quantized(mod)
        assert x.int_repr().max() < 128
        assert torch.equal(fast(x).int_repr(), mod(x).int_repr().contiguous())
    finally:
        torch.backends.quantized.engine = old


@pytest.fixture
def x86_engine(exact_int8_reference):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    yield
    torch.backends.quantized.engine = old


@pytest.mark.parametrize("cfg", CONVS[:10], ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("cls,relu", [(nnq.Conv2d, False), (nniq.ConvReLU2d, True)])
def test_conv_int8_bit_exact(x86_engine, cfg, cls, relu):
    mod = _qconv(cls, cfg, 0.3)
    cin, h, w = cfg[0], cfg[7], cfg[8]
    x = torch.quantize_per_tensor(torch.randn(2, cin, h, w), 0.04, 120, torch.quint8)
    want = mod(x)
    fast = SparseConv2d.from_quantized(mod, relu=relu)
    assert fast.exact  # the weights alone guarantee exact integer accumulation
    got = fast(x)
    assert (got.q_scale(), got.q_zero_point()) == (want.q_scale(), want.q_zero_point())
    assert torch.equal(got.int_repr(), want.int_repr().contiguous())


def test_conv_int8_block4_bit_exact(x86_engine):
    mod = _qconv(nnq.Conv2d, (16, 32, 3, 2, 1, 1, 1, 9, 9), 1.0)
    w = mod.weight().dequantize()
    _blocks_4x1(w, 0.3)
    scales = mod.weight().q_per_channel_scales()
    mod.set_weight_bias(
        torch.quantize_per_channel(w, scales, torch.zeros(32, dtype=torch.long), 0, torch.qint8), mod.bias()
    )
    x = torch.quantize_per_tensor(torch.randn(2, 16, 9, 9), 0.04, 120, torch.quint8)
    fast = SparseConv2d.from_quantized(mod)
    got = fast(x)
    assert fast.block4 and next(iter(fast._plans.values())).group == 4
    assert torch.equal(got.int_repr(), mod(x).int_repr().contiguous())


@pytest.mark.parametrize("cls,relu,batch", [(nnq.Linear, False, 1), (nniq.LinearReLU, True, 3)])
def test_linear_int8_bit_exact(x86_engine, cls, relu, batch):
    torch.manual_seed(0)
    w = torch.randn(12, 40)
    _sparse_(w, 0.25)
    qw = torch.quantize_per_channel(
        w, (torch.rand(12) * 0.02 + 0.005).double(), torch.zeros(12, dtype=torch.long), 0, torch.qint8
    )
    mod = cls(40, 12)
    mod.set_weight_bias(qw, torch.randn(12) * 0.1)
    mod.scale, mod.zero_point = 0.1, 100
    x = torch.quantize_per_tensor(torch.randn(batch, 40), 0.03, 128, torch.quint8)
    got = SparseLinear.from_quantized(mod, relu=relu)(x)
    assert torch.equal(got.int_repr(), mod(x).int_repr())


# The 1x4-block INT8 kernel (b4i8). Forced with use_kernel it runs on any CPU (AVX512-VNNI where the build
# has it, a scalar int32 loop elsewhere), so its arithmetic is checked everywhere; which kernel a module
# picks by itself depends on the CPU and is checked where VNNI exists.
VNNI = pytest.mark.skipif(
    compiler() is None or not b4i8_available(),
    reason="this CPU (or build) lacks AVX512-VNNI: the 1x4-block INT8 kernel is not offered here",
)


@pytest.fixture
def fbgemm_engine(exact_int8_reference):
    """torch.ao's fbgemm kernels: the arithmetic the sparse INT8 kernels reproduce. (The x86 engine sends
    convs to oneDNN on VNNI CPUs, which rounds 1-2 outputs per 131k differently, by one step.)"""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = old


def _blocks_1x4(weight: torch.Tensor, density: float, seed: int = 0) -> torch.Tensor:
    """``weight`` zeroed in 1x4 blocks along input channels (what ``block_1x4`` pruning leaves; a last
    block is short when the channel count is not a multiple of 4)."""
    out, cin, kh, kw = weight.shape
    groups = -(-cin // 4)
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(out, groups, 1, kh, kw, generator=gen) < density
    return weight * keep.expand(out, groups, 4, kh, kw).reshape(out, 4 * groups, kh, kw)[:, :cin]


def _qconv_1x4(cls, cfg, density, w_scale=0.02):
    cin, cout, k, s, p, d, g, _, _ = cfg
    torch.manual_seed(0)
    w = _blocks_1x4(torch.randn(cout, cin // g, k, k), density)
    scales = (torch.rand(cout) * w_scale + 0.005).double()
    qw = torch.quantize_per_channel(w, scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    mod = cls(cin, cout, k, stride=s, padding=p, dilation=d, groups=g)
    mod.set_weight_bias(qw, torch.randn(cout) * 0.1)
    mod.scale, mod.zero_point = 0.05, 64
    return mod


# every groups=1 geometry of CONVS (ResNet 3x3 s1/s2, 1x1 s2 shortcut, 5x5 with and without padding,
# dilation 2), channel counts that are not multiples of 4, and a 64-channel 32x32 layer (several tiles of
# output positions, two input-channel blocks)
B4_CONVS = [c for c in CONVS if c[6] == 1] + [
    (10, 12, 3, 2, 1, 1, 1, 7, 11),
    (5, 8, 3, 1, 1, 1, 1, 20, 20),
    (64, 64, 3, 1, 1, 1, 1, 32, 32),
]


@pytest.mark.parametrize("cfg", B4_CONVS, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("cls,relu,batch", [(nnq.Conv2d, False, 1), (nniq.ConvReLU2d, True, 3)])
def test_conv_int8_b4i8_bit_exact(fbgemm_engine, cfg, cls, relu, batch):
    mod = _qconv_1x4(cls, cfg, 0.4)
    cin, h, w = cfg[0], cfg[7], cfg[8]
    x = torch.quantize_per_tensor(torch.randn(batch, cin, h, w), 0.04, 120, torch.quint8)
    fast = SparseConv2d.from_quantized(mod, relu=relu).use_kernel("b4i8")
    got = fast(x)
    assert fast.exact and fast._b4plans and not fast._plans  # ran on b4i8, not on the lane kernel
    want = mod(x)
    assert (got.q_scale(), got.q_zero_point(), got.shape) == (want.q_scale(), want.q_zero_point(), want.shape)
    assert torch.equal(got.int_repr(), want.int_repr().contiguous())
    assert torch.equal(
        got.int_repr(), SparseConv2d.from_quantized(mod, relu=relu).use_kernel("lanes")(x).int_repr()
    )


def test_b4i8_exact_where_float_lanes_are_not(fbgemm_engine):
    """Weight sums beyond 2**24 / 255 per channel: the lane kernel cannot promise exactness, int32 can."""
    cfg = (512, 8, 3, 1, 1, 1, 1, 4, 4)
    mod = _qconv_1x4(nnq.Conv2d, cfg, 1.0)
    w = torch.full((8, 512, 3, 3), 1.0)
    qw = torch.quantize_per_channel(
        w, torch.full((8,), 1 / 127).double(), torch.zeros(8, dtype=torch.long), 0, torch.qint8
    )
    mod.set_weight_bias(qw, None)
    mod.scale, mod.zero_point = 2000.0, 3
    x = torch.quantize_per_tensor(torch.rand(2, 512, 4, 4) * 10, 0.04, 0, torch.quint8)
    assert not SparseConv2d.from_quantized(mod).use_kernel("lanes").exact
    fast = SparseConv2d.from_quantized(mod).use_kernel("b4i8")
    assert fast.exact and torch.equal(fast(x).int_repr(), mod(x).int_repr())


def test_b4i8_zero_weights_and_changing_zero_point(fbgemm_engine):
    mod = _qconv_1x4(nniq.ConvReLU2d, (8, 8, 3, 1, 1, 1, 1, 6, 6), 0.0)  # no weights: bias alone
    fast = SparseConv2d.from_quantized(mod, relu=True).use_kernel("b4i8")
    x = torch.quantize_per_tensor(torch.randn(2, 8, 6, 6), 0.04, 120, torch.quint8)
    assert torch.equal(fast(x).int_repr(), mod(x).int_repr())
    mod = _qconv_1x4(nnq.Conv2d, (8, 8, 3, 1, 1, 1, 1, 6, 6), 0.5)
    fast = SparseConv2d.from_quantized(mod).use_kernel("b4i8")
    for zp in (120, 0, 255, 120):  # the padding (holding the input zero point) is refilled on a change
        x = torch.quantize_per_tensor(torch.randn(1, 8, 6, 6), 0.04, zp, torch.quint8)
        assert torch.equal(fast(x).int_repr(), mod(x).int_repr())
    twin = copy.deepcopy(fast)  # its packed plan points at its own buffers
    del fast
    assert torch.equal(twin(x).int_repr(), mod(x).int_repr())


def test_b4i8_rejects_what_it_cannot_run():
    conv = nn.Conv2d(8, 8, 3)
    with pytest.raises(ValueError, match="INT8 convolutions with groups=1"):
        SparseConv2d.from_dense(conv).use_kernel("b4i8")
    with pytest.raises(ValueError, match="kernel='fast'"):
        SparseConv2d.from_dense(conv).use_kernel("fast")


def test_block1x4_detection():
    w = torch.randn(8, 10, 3, 3)
    assert is_block1x4(_blocks_1x4(w, 0.3), groups=1)
    assert is_block1x4(torch.zeros(8, 10, 3, 3), groups=1)  # no blocks at all
    assert not is_block1x4(_blocks_1x4(w, 0.3), groups=2)
    unstructured = w * (torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.3)
    assert not is_block1x4(unstructured, groups=1)
    rows = torch.zeros(8, 10, 3, 3)
    rows[:4] = w[:4]  # 4x1 blocks along output channels are not 1x4 blocks: dense rows are, though
    assert is_block1x4(rows, groups=1) and not is_block1x4(unstructured[:, :4], groups=1)


@VNNI
def test_module_picks_b4i8_only_for_1x4_blocks():
    cfg = (16, 32, 3, 2, 1, 1, 1, 9, 9)
    assert SparseConv2d.from_quantized(_qconv_1x4(nnq.Conv2d, cfg, 0.3)).kernel == "b4i8"
    unstructured = _qconv(nnq.Conv2d, cfg, 0.3)
    assert SparseConv2d.from_quantized(unstructured).kernel == "lanes"
    block4x1 = _qconv(nnq.Conv2d, cfg, 1.0)
    w = block4x1.weight().dequantize()
    _blocks_4x1(w, 0.3)
    scales = block4x1.weight().q_per_channel_scales()
    zeros = torch.zeros(32, dtype=torch.long)
    block4x1.set_weight_bias(torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8), None)
    assert SparseConv2d.from_quantized(block4x1).kernel == "lanes"
    grouped = _qconv_1x4(nnq.Conv2d, (16, 32, 3, 1, 1, 1, 2, 6, 6), 0.3)
    assert SparseConv2d.from_quantized(grouped).kernel == "lanes"
    fp32 = nn.Conv2d(16, 32, 3)
    with torch.no_grad():
        fp32.weight.copy_(_blocks_1x4(fp32.weight, 0.3))
    assert SparseConv2d.from_dense(fp32).kernel == "lanes"
