"""INT8 pieces shared by the sparse modules: integer weights, and the quantized residual add fused into a
sparse conv's epilogue (``kernels/qadd.c``).

The fused add reproduces torch.ao's quantized add (``QFunctional.add``) followed by a quantized ReLU bit for
bit: torch dequantizes each operand with a fused multiply-add on its vectorized path and without one on the
few elements its loop leaves to the scalar path (``kernels/qadd.c`` says which: it depends on the element
count, torch's thread count and the CPU capability torch dispatches to, all known at the call), adds in
float, multiplies by ``1 / scale`` and rounds (the scalar path adds the zero point before rounding, the vector
path after). The conv's own requantized uint8 output is the first operand, as the unfused model's conv
output would be. Verified against torch 2.13 with its AVX-512 and AVX2 kernels (``ATEN_CPU_CAPABILITY``),
on 1-3 threads; torch's generic kernels (``ATEN_CPU_CAPABILITY=default``) round differently, so the
converter does not fuse the INT8 add there (:func:`vector_step` is 0).

Example:
    >>> vector_step() in (0, 64)
    True
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch


def int_weight(wq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer weight values (zero point removed) as float and the per-output-channel scales."""
    ints = wq.int_repr().to(torch.int32)
    oc = ints.shape[0]
    shape = (oc,) + (1,) * (ints.dim() - 1)
    if wq.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if wq.q_per_channel_axis() != 0:
            raise ValueError("per-channel weights quantized along an axis other than 0 are not supported")
        scale = wq.q_per_channel_scales().to(torch.float32)
        zp = wq.q_per_channel_zero_points().to(torch.int32).view(shape)
    else:
        scale = torch.full((oc,), wq.q_scale(), dtype=torch.float32)
        zp = torch.full(shape, wq.q_zero_point(), dtype=torch.int32)
    return (ints - zp).to(torch.float32), scale


@cache
def vector_step() -> int:
    """Elements per step of torch's vectorized quantized add on this CPU (where its scalar tail starts):
    64 with AVX-512 and with AVX2 (measured against torch 2.13, also with ``ATEN_CPU_CAPABILITY=avx2``),
    0 where torch runs without vector kernels (``ATEN_CPU_CAPABILITY=default``: all scalar)."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return 64 if capability.startswith(("AVX512", "AVX2")) else 0


class QAddParams(ctypes.Structure):
    """``sv_qaddp`` of ``kernels/qadd.h``: the conv's output qparams, the add's, the ReLU bound, the step."""

    _fields_ = [
        ("sa", ctypes.c_float),
        ("za", ctypes.c_int),
        ("so", ctypes.c_float),
        ("zo", ctypes.c_int),
        ("lo", ctypes.c_int),
        ("vstep", ctypes.c_int),
    ]


def qadd_params(conv_qparams: tuple[float, int], add_qparams: tuple[float, int], relu: bool) -> QAddParams:
    """The fused add of a conv with output ``conv_qparams`` into ``add_qparams`` (scale, zero point)."""
    (sa, za), (so, zo) = conv_qparams, add_qparams
    return QAddParams(float(sa), int(za), float(so), int(zo), int(zo) if relu else 0, vector_step())


def check_residual(residual: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``residual`` as the contiguous quint8 tensor of ``shape`` the fused add reads."""
    if residual.dtype != torch.quint8 or tuple(residual.shape) != tuple(shape):
        raise ValueError(
            f"residual of shape {tuple(residual.shape)} and dtype {residual.dtype}: needs a quint8 {tuple(shape)}"
        )
    if residual.qscheme() != torch.per_tensor_affine:
        raise ValueError("the fused residual add needs a per-tensor quantized residual")
    return residual.contiguous()


def quantized_add(
    a: torch.Tensor, b: torch.Tensor, scale: float, zero_point: int, relu: bool = False
) -> torch.Tensor:
    """``torch.ops.quantized.add(a, b, scale, zero_point)`` (``add_relu`` with ``relu``) on the fused add's
    kernel: the same bits (for contiguous per-tensor quint8 ``a`` and ``b`` of one shape), used to check it.

    Example:
        >>> a = torch.quantize_per_tensor(torch.randn(3, 5), 0.05, 128, torch.quint8)
        >>> torch.equal(quantized_add(a, a, 0.1, 128), torch.ops.quantized.add(a, a, 0.1, 128))  # doctest: +SKIP
        True
    """
    from shrinkviz.sparse import build

    a, b = check_residual(a, tuple(b.shape)), check_residual(b, tuple(a.shape))
    params = qadd_params((a.q_scale(), a.q_zero_point()), (scale, zero_point), relu)
    out = torch._empty_affine_quantized(a.shape, scale=scale, zero_point=zero_point, dtype=torch.quint8)
    n = a.numel()
    build.lib().sv_qadd_u8(
        ctypes.addressof(params),
        a.data_ptr(),
        b.data_ptr(),
        b.q_scale(),
        b.q_zero_point(),
        out.data_ptr(),
        n,
        0,
        n,
        torch.get_num_threads(),
    )
    return out
