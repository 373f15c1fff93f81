"""The column-shifted input layout of stride-1 convolutions (aligned loads, no junk columns) against the dense
layers and against the phase layout it replaces: FP32 within float32 rounding, INT8 bit-exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantized as nnq
from torch import nn

from shrinkviz.sparse.build import compiler
from shrinkviz.sparse.modules import SparseConv2d

pytestmark = pytest.mark.skipif(
    compiler() is None, reason="no C compiler: the sparse kernels cannot be built"
)
RTOL, ATOL = 1e-4, 1e-5  # see test_sparse_kernels.py

# (cin, cout, kernel, stride, padding, dilation, groups, height, width), output widths multiples of 8:
# ResNet 3x3 s1 and s2 and the 1x1 s2 shortcut, 5x5 with and without padding, dilation 2, grouped, and a
# 64-channel 32x32 layer (several tiles and input-channel blocks)
SHIFTED = [
    (8, 8, 3, 1, 1, 1, 1, 16, 16),
    (8, 16, 3, 2, 1, 1, 1, 16, 16),
    (16, 32, 1, 2, 0, 1, 1, 16, 15),
    (4, 8, 5, 1, 2, 1, 1, 8, 8),
    (6, 16, 5, 1, 0, 1, 1, 12, 12),
    (8, 8, 3, 1, 2, 2, 1, 8, 16),
    (8, 8, 3, 2, 2, 2, 1, 9, 15),
    (8, 16, 3, 1, 1, 1, 2, 8, 8),
    (64, 64, 3, 1, 1, 1, 1, 32, 32),
]


def _conv(cfg: tuple, density: float, block4: bool = False) -> nn.Conv2d:
    cin, cout, k, st, p, d, g, _, _ = cfg
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, st, p, d, g)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if block4:  # 4 consecutive output channels share their nonzero positions
            keep = torch.rand(cout // 4, 1, *conv.weight.shape[1:], generator=gen) < density
            conv.weight.mul_(keep.expand(-1, 4, -1, -1, -1).reshape(conv.weight.shape))
        else:
            conv.weight.mul_(torch.rand(conv.weight.shape, generator=gen) < density)
    return conv


@pytest.mark.parametrize("cfg", SHIFTED, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("block4", [False, True])
def test_shifted_layout_fp32(cfg, block4):
    conv = _conv(cfg, 0.4, block4)
    x = torch.randn(2, cfg[0], cfg[7], cfg[8])
    fast = SparseConv2d.from_dense(conv, relu=True)
    res = torch.randn(conv(x).shape)
    got = fast(x, residual=res)
    plan = next(iter(fast._plans.values()))
    assert plan.shift and fast.block4 == block4
    with torch.no_grad():
        torch.testing.assert_close(got, (conv(x) + res).relu(), rtol=RTOL, atol=ATOL)
    phase = copy.deepcopy(fast)
    phase.shifted, phase._plans = False, {}
    torch.testing.assert_close(got, phase(x, residual=res), rtol=RTOL, atol=ATOL)
    assert not next(iter(phase._plans.values())).shift


def test_phase_layout_where_shifting_does_not_apply():
    for conv, hw in ((nn.Conv2d(8, 8, 3, 2, 1), 12), (nn.Conv2d(8, 8, 3, 1, 1), 12), (nn.Conv2d(8, 8, 1), 8)):
        fast = SparseConv2d.from_dense(conv)
        x = torch.randn(1, 8, hw, hw)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), conv(x), rtol=RTOL, atol=ATOL)
        assert not next(iter(fast._plans.values())).shift  # OW 6, OW 12, 1x1 stride 1


@pytest.mark.parametrize("cfg", SHIFTED, ids=lambda c: "x".join(map(str, c)))
def test_shifted_layout_int8_bit_exact(cfg):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        cin, cout, k, st, p, d, g, h, w = cfg
        conv = _conv(cfg, 0.3)
        scales = (torch.rand(cout) * 0.02 + 0.005).double()
        qw = torch.quantize_per_channel(
            conv.weight.detach(), scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8
        )
        mod = nnq.Conv2d(cin, cout, k, stride=st, padding=p, dilation=d, groups=g)
        mod.set_weight_bias(qw, torch.randn(cout) * 0.1)
        mod.scale, mod.zero_point = 0.05, 64
        x = torch.quantize_per_tensor(torch.randn(2, cin, h, w), 0.04, 120, torch.quint8)
        fast = SparseConv2d.from_quantized(mod).use_kernel("lanes")
        got = fast(x)
        assert next(iter(fast._plans.values())).shift
        assert torch.equal(got.int_repr(), mod(x).int_repr())
    finally:
        torch.backends.quantized.engine = old


# The b4i8 kernel's interleaved phase copy: stride 2 over rows wide enough for its vector path (32 source
# bytes per 16 columns), channel counts that are and are not multiples of 4, and 1x1 stride-2 shortcuts,
# which read one of the four phases (only that one is copied).
B4_STRIDED = [
    ((8, 16, 3, 2, 1, 40, 70), 0b1111),
    ((10, 8, 3, 2, 0, 35, 37), 0b1111),
    ((8, 16, 1, 2, 0, 40, 67), 0b0001),
    ((64, 128, 1, 2, 0, 32, 32), 0b0001),
]


@pytest.mark.parametrize("cfg,phases", B4_STRIDED, ids=["s2_3x3", "s2_3x3_10ch", "s2_1x1", "s2_1x1_64ch"])
def test_b4i8_strided_phase_copy_bit_exact(exact_int8_reference, cfg, phases):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        cin, cout, k, s, p, h, w = cfg
        torch.manual_seed(0)
        keep = torch.rand(cout, -(-cin // 4), 1, k, k) < 0.4
        wt = torch.randn(cout, cin, k, k) * keep.expand(-1, -1, 4, -1, -1).reshape(cout, -1, k, k)[:, :cin]
        scales = (torch.rand(cout) * 0.02 + 0.005).double()
        qw = torch.quantize_per_channel(wt, scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        mod = nnq.Conv2d(cin, cout, k, stride=s, padding=p)
        mod.set_weight_bias(qw, torch.randn(cout) * 0.1)
        mod.scale, mod.zero_point = 0.05, 64
        fast = SparseConv2d.from_quantized(mod).use_kernel("b4i8")
        for zp in (120, 3):
            x = torch.quantize_per_tensor(torch.randn(2, cin, h, w), 0.04, zp, torch.quint8)
            assert torch.equal(fast(x).int_repr(), mod(x).int_repr())
        assert next(iter(fast._b4plans.values())).phases == phases
    finally:
        torch.backends.quantized.engine = old


@pytest.mark.parametrize(
    "cin,cout,k,p,d,h,w,shift",
    [
        (8, 8, 3, 1, 1, 4, 4, True),  # OW 4: 16 positions instead of 24 (-> 32)
        (12, 8, 3, 1, 1, 8, 8, True),
        (10, 16, 5, 2, 1, 16, 16, True),
        (8, 8, 3, 2, 2, 8, 8, True),
        (8, 8, 3, 1, 1, 32, 32, False),  # 1088 -> 1024 positions: not worth three copies
    ],
)
def test_b4i8_shifted_layout_bit_exact(exact_int8_reference, cin, cout, k, p, d, h, w, shift):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        torch.manual_seed(0)
        keep = torch.rand(cout, -(-cin // 4), 1, k, k) < 0.4
        wt = torch.randn(cout, cin, k, k) * keep.expand(-1, -1, 4, -1, -1).reshape(cout, -1, k, k)[:, :cin]
        scales = (torch.rand(cout) * 0.02 + 0.005).double()
        qw = torch.quantize_per_channel(wt, scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        mod = nnq.Conv2d(cin, cout, k, padding=p, dilation=d)
        mod.set_weight_bias(qw, torch.randn(cout) * 0.1)
        mod.scale, mod.zero_point = 0.05, 64
        fast = SparseConv2d.from_quantized(mod).use_kernel("b4i8")
        for zp in (120, 3, 120):
            x = torch.quantize_per_tensor(torch.randn(3, cin, h, w), 0.04, zp, torch.quint8)
            assert torch.equal(fast(x).int_repr(), mod(x).int_repr())
        assert next(iter(fast._b4plans.values())).shift == int(shift)
    finally:
        torch.backends.quantized.engine = old
