"""The quantized residual add fused into the INT8 sparse conv epilogue: bit-exact with torch.ao's quantized add
(+ ReLU), element by element, on both INT8 kernels and in converted ResNets (fbgemm engine, as the other INT8
tests: the x86 engine sends convs to oneDNN on VNNI CPUs, which rounds 1-2 outputs per 131k differently, by
one step)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.ao.nn.quantized as nnq
from torch import nn

from shrinkviz.sparse.build import compiler
from shrinkviz.sparse.int8 import quantized_add, vector_step
from shrinkviz.sparse.modules import SparseConv2d

pytestmark = pytest.mark.skipif(
    compiler() is None, reason="no C compiler: the sparse kernels cannot be built"
)


@pytest.fixture
def fbgemm_engine(exact_int8_reference):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = old


@pytest.fixture
def threads():
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)


def _splitting_pairs(seed: int, want: int = 4) -> list[tuple[tuple, np.ndarray, np.ndarray]]:
    """Quantization parameters (sa, za, sb, zb, so, zo) with the (a, b) value pairs on which torch's vector
    path (fma dequantization) and scalar path (legacy rounding) give different results: only such pairs can
    tell whether the fused add splits the tensor the way torch does."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    grid = np.arange(256, dtype=np.float64)
    a, b = (g.ravel() for g in np.meshgrid(grid, grid, indexing="ij"))
    found = []
    while len(found) < want:
        sa, sb, so = (f32(rng.uniform(0.001, 0.1)) for _ in range(3))
        za, zb, zo = (int(rng.integers(0, 256)) for _ in range(3))
        inv = f32(1) / so
        # fma(s, q, s * -z) rounds once: the product is exact in float64, then one rounding to float32
        vec = (a * sa + f32(sa * f32(-za))).astype(f32) + (b * sb + f32(sb * f32(-zb))).astype(f32)
        sca = (sa * (a - za).astype(f32)).astype(f32) + (sb * (b - zb).astype(f32)).astype(f32)
        qv = np.clip(np.rint((vec * inv).astype(f32)) + zo, 0, 255)
        qs = np.clip(np.rint(f32(zo) + (sca * inv).astype(f32)), 0, 255)
        differ = np.nonzero(qv != qs)[0]
        if len(differ):
            params = (float(sa), za, float(sb), zb, float(so), zo)
            found.append((params, a[differ].astype(np.uint8), b[differ].astype(np.uint8)))
    return found


VECTOR = pytest.mark.skipif(
    not vector_step(), reason="torch without AVX2 / AVX-512 kernels: the INT8 add is not fused (int8.py)"
)


@VECTOR
@pytest.mark.parametrize("n,nthreads", [(300, 1), (70000, 1), (40344, 2), (99999, 3), (65536, 2)])
@pytest.mark.parametrize("relu", [False, True])
def test_quantized_add_matches_torch_on_its_vector_and_scalar_paths(threads, n, nthreads, relu):
    threads(
        nthreads
    )  # the split of the tensor into loop ranges (and so the scalar tails) follows the threads
    gen = np.random.default_rng(n)
    for (sa, za, sb, zb, so, zo), pa, pb in _splitting_pairs(seed=0):
        pick = gen.integers(0, len(pa), n)
        a = torch._make_per_tensor_quantized_tensor(torch.from_numpy(pa[pick]), sa, za)
        b = torch._make_per_tensor_quantized_tensor(torch.from_numpy(pb[pick]), sb, zb)
        want = (torch.ops.quantized.add_relu if relu else torch.ops.quantized.add)(a, b, so, zo)
        got = quantized_add(a, b, so, zo, relu)
        assert (got.q_scale(), got.q_zero_point()) == (want.q_scale(), want.q_zero_point())
        assert torch.equal(got.int_repr(), want.int_repr())


def test_vector_step_follows_torch_capability():
    capability = torch.backends.cpu.get_cpu_capability().upper()
    assert vector_step() == (64 if capability.startswith(("AVX512", "AVX2")) else 0)


def _qconv(cin: int, cout: int, stride: int, density: float, blocks: bool) -> nnq.Conv2d:
    torch.manual_seed(0)
    w = torch.randn(cout, cin, 3, 3)
    if blocks:  # 1x4 blocks along input channels (the b4i8 kernel's pattern)
        keep = torch.rand(cout, -(-cin // 4), 1, 3, 3) < density
        w = w * keep.expand(-1, -1, 4, -1, -1).reshape(cout, -1, 3, 3)[:, :cin]
    else:
        w = w * (torch.rand(w.shape) < density)
    scales = (torch.rand(cout) * 0.02 + 0.005).double()
    qw = torch.quantize_per_channel(w, scales, torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
    mod = nnq.Conv2d(cin, cout, 3, stride=stride, padding=1)
    mod.set_weight_bias(qw, torch.randn(cout) * 0.1)
    mod.scale, mod.zero_point = 0.05, 70
    return mod


@VECTOR
@pytest.mark.parametrize("kernel", ["lanes", "b4i8"])
@pytest.mark.parametrize(
    "cin,cout,stride,hw,batch",
    [(8, 8, 1, 9, 1), (6, 12, 2, 11, 3), (16, 16, 1, 16, 2), (24, 24, 1, 41, 1)],
)
@pytest.mark.parametrize("relu", [False, True])
def test_fused_residual_add_bit_exact(fbgemm_engine, threads, kernel, cin, cout, stride, hw, batch, relu):
    threads(2)  # 24 x 41 x 41 outputs exceed torch's grain: two loop ranges, each with a scalar tail
    dense = _qconv(cin, cout, stride, 0.3, blocks=kernel == "b4i8")
    x = torch.quantize_per_tensor(torch.randn(batch, cin, hw, hw), 0.04, 120, torch.quint8)
    conv_out = dense(x)
    r = torch.quantize_per_tensor(torch.randn(conv_out.shape), 0.03, 100, torch.quint8)
    add = nnq.QFunctional()
    add.scale, add.zero_point = 0.045, 90
    want = add.add(conv_out, r)
    want = torch.relu(want) if relu else want
    fast = SparseConv2d.from_quantized(dense).use_kernel(kernel).fuse_add((0.045, 90), relu=relu)
    got = fast(x, residual=r)
    assert (got.q_scale(), got.q_zero_point()) == (0.045, 90)
    assert torch.equal(got.int_repr(), want.int_repr())
    assert torch.equal(fast(x).int_repr(), conv_out.int_repr())  # without a residual: the conv alone
    for twin in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert torch.equal(twin(x, residual=r).int_repr(), want.int_repr())


def test_fused_residual_add_rejects_bad_input(fbgemm_engine):
    dense = _qconv(8, 8, 1, 0.3, blocks=False)
    x = torch.quantize_per_tensor(torch.randn(1, 8, 6, 6), 0.04, 120, torch.quint8)
    r = torch.quantize_per_tensor(torch.randn(1, 8, 6, 6), 0.03, 100, torch.quint8)
    with pytest.raises(ValueError, match="needs fuse_add"):
        SparseConv2d.from_quantized(dense)(x, residual=r)
    fast = SparseConv2d.from_quantized(dense).fuse_add((0.05, 10), relu=True)
    with pytest.raises(ValueError, match="needs a quint8"):
        fast(x, residual=r.dequantize())
    with pytest.raises(ValueError, match="needs a quint8"):
        fast(x, residual=r[:, :4])
    with pytest.raises(ValueError, match="fuse_add takes an INT8 conv"):
        SparseConv2d.from_dense(nn.Conv2d(8, 8, 3)).fuse_add((0.05, 10), relu=False)
