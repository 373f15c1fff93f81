"""Sparse Conv2d / Linear modules over the C kernels, FP32 and INT8, with weights packed once (inference
only: no autograd through the kernels).

A weight is packed at construction into CSR over output channels: per output channel the flat offsets
of its nonzeros into the phase buffer (see ``kernels/sparse.c``) and their values. Weights whose nonzeros
come in 4x1 blocks along output channels (``block_4x1`` pruning) are packed per block instead, one offset
and four values, and run on a kernel where one input load feeds four output channels (1.4-1.8x faster
per nonzero than the unstructured kernel, measured on ResNet-18 shapes). The offsets depend on
the input's spatial size (and, for a linear layer, the batch), so a plan is built per input shape the
first time it is seen and reused after: a call does no packing, only the kernel calls.

INT8 follows the x86 (fbgemm) quantized semantic: uint8 activations with scale / zero point, per-channel
(or per-tensor) int8 weights, exact integer accumulation, then ``zp + round((acc + bias / (sx * sw)) *
(sx * sw / so))`` saturated to uint8 (from the zero point up with a fused ReLU). The accumulation is done
on exact integer-valued floats: it is exact while a partial sum stays below 2**24 in magnitude, which
:attr:`exact` guarantees from the weights alone (true of every layer in the tests and benchmarks);
beyond that, float rounding of the accumulator can move an output by one quantization step. INT8
convolutions whose weights come in 1x4 blocks along input channels run instead, where the CPU has
AVX512-VNNI, on the ``b4i8`` kernel (:mod:`shrinkviz.sparse.blocks`): int32 accumulation, always exact,
the same requantization. Both match torch.ao's fbgemm kernels bit for bit; the x86 engine sends convs to
oneDNN on VNNI CPUs, whose requantization rounds differently in rare cases (one step, a few outputs per
million in a 64-channel test here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinkviz.sparse import build
from shrinkviz.sparse.blocks import (
    B4Plan,
    b4i8_available,
    blocks4,
    is_block1x4,
    is_block4,
    plan_b4i8,
    run_b4i8,
)

_VL = 8  # floats per vector in the kernels
_L1_BYTES = 16 * 1024  # input slice per tile and channel block: half a typical 32 KiB L1D


def _ceil8(n: int) -> int:
    return -(-n // _VL) * _VL


@dataclass
class _Plan:
    rowptr: torch.Tensor
    off: torch.Tensor
    val: torch.Tensor
    nblk: int
    group: int  # 4: rows are 4x1 blocks of output channels (sv_spconv4), else 1
    geometry: tuple[int, ...]  # C, H, W, pad_t, pad_l, sh, sw, Hq, Wq
    out_hw: tuple[int, int]
    length: int
    xbuf: torch.Tensor
    acc: torch.Tensor


class _SparseBase(nn.Module):
    """Shared state: nonzero indices and values of the (masked) weight, per-shape plans, epilogue."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool) -> None:
        super().__init__()
        weight = weight.detach().to(torch.float32)
        self.weight_shape = tuple(weight.shape)
        self.nnz_index = weight.nonzero()  # sorted by output channel first
        self.nnz_value = weight[tuple(self.nnz_index.unbind(1))].contiguous()
        self.bias_f = None if bias is None else bias.detach().to(torch.float32).contiguous()
        self.relu = bool(relu)
        self.quant: dict[str, Any] | None = None
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self.block4 = is_block4(weight, groups=1)
        build.load()  # fail at construction, not at the first call, where the kernels are unavailable

    @property
    def _lib(self) -> Any:
        return build.load()  # not an attribute: a ctypes library cannot be deep-copied or pickled

    @property
    def density(self) -> float:
        """Fraction of the weight that is nonzero."""
        return self.nnz_index.shape[0] / max(1, torch.Size(self.weight_shape).numel())

    @property
    def exact(self) -> bool:
        """INT8: whether bit-exactness is guaranteed for every input. The accumulation runs on integer-valued
        floats, exact while every partial sum stays below 2**24; with |q - zp| <= 255 that holds for all
        inputs when each output channel's sum of |w_int| is below 2**24 / 255. Always True for FP32 and
        for the ``b4i8`` kernel (int32 accumulation)."""
        if self.quant is None or getattr(self, "kernel", "lanes") == "b4i8":
            return True  # FP32, or INT8 accumulated in int32
        per_channel = torch.zeros(self.weight_shape[0]).index_add_(
            0, self.nnz_index[:, 0], self.nnz_value.abs()
        )
        return bool(per_channel.max() * 255 < 2**24) if per_channel.numel() else True

    def _set_int8(self, w_scale: torch.Tensor, out_scale: float, out_zp: int) -> None:
        self.quant = {
            "w_scale": w_scale.to(torch.float32),
            "so": float(out_scale),
            "zp": int(out_zp),
            "key": None,
        }

    def _requant(self, sx: float) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.quant
        assert q is not None
        if q["key"] != sx:
            act_w = torch.tensor(sx, dtype=torch.float32) * q["w_scale"]
            mult = (act_w / torch.tensor(q["so"], dtype=torch.float32)).contiguous()
            bias = self.bias_f if self.bias_f is not None else torch.zeros_like(act_w)
            q.update(key=sx, mult=mult, bias_q=(bias / act_w).contiguous())
        return q["mult"], q["bias_q"]

    def _run(
        self,
        plan: _Plan,
        src: torch.Tensor,
        zp: int | None,
        out: torch.Tensor,
        sx: float = 0.0,
        res: torch.Tensor | None = None,
    ) -> None:
        lib, g = self._lib, plan.geometry
        if zp is None:
            lib.sv_phase_f32(src.data_ptr(), *g, plan.xbuf.data_ptr())
        else:
            lib.sv_phase_u8(src.data_ptr(), zp, *g, plan.xbuf.data_ptr())
        oc = self.weight_shape[0]
        oh, ow = plan.out_hw
        lr = plan.acc.numel() // oc
        if plan.length == 1:
            lib.sv_spmv(
                plan.xbuf.data_ptr(),
                oc,
                plan.rowptr.data_ptr(),
                plan.off.data_ptr(),
                plan.val.data_ptr(),
                plan.acc.data_ptr(),
            )
        else:
            kernel = lib.sv_spconv4 if plan.group == 4 else lib.sv_spconv
            kernel(
                plan.xbuf.data_ptr(),
                oc // plan.group,
                plan.nblk,
                plan.rowptr.data_ptr(),
                plan.off.data_ptr(),
                plan.val.data_ptr(),
                plan.length,
                plan.acc.data_ptr(),
                lr,
            )
        if self.quant is None:
            bias = None if self.bias_f is None else self.bias_f.data_ptr()
            rptr = None if res is None else res.data_ptr()
            lib.sv_finish_f32(
                plan.acc.data_ptr(), oc, lr, oh, ow, g[8], None, bias, rptr, int(self.relu), out.data_ptr()
            )
        else:
            mult, bias_q = self._requant(sx)
            zp_out = self.quant["zp"]
            lib.sv_finish_u8(
                plan.acc.data_ptr(),
                oc,
                lr,
                oh,
                ow,
                g[8],
                mult.data_ptr(),
                bias_q.data_ptr(),
                zp_out,
                zp_out if self.relu else 0,
                out.data_ptr(),
            )

    def _new_plan(
        self,
        offsets: torch.Tensor,
        channel: torch.Tensor,
        geometry: tuple[int, ...],
        out_hw: tuple[int, int],
        length: int,
        rows: int = 1,
    ) -> _Plan:
        """``rows``: input rows (of the phase images) one output tile reads per channel and phase."""
        c, _, _, _, _, sh, sw, hq, wq = geometry
        oc = self.weight_shape[0]
        lr = _ceil8(length) if length > 1 else 1
        nblk = 1
        if length > 1:  # input-channel blocks whose slice read by one tile fits in L1
            tile = min(lr, self._lib.sv_tile_floats())  # output floats one tile keeps in registers
            per_channel = sh * sw * (-(-tile // wq) + rows) * wq * 4
            nblk = max(1, min(c, -(-c * per_channel // _L1_BYTES)))
        block = -(-c // nblk)
        order = torch.sort((channel // block) * oc + self.nnz_index[:, 0], stable=True).indices
        segment = ((channel // block) * oc + self.nnz_index[:, 0])[order]
        rowptr = torch.zeros(nblk * oc + 1, dtype=torch.int32)
        rowptr[1:] = torch.bincount(segment, minlength=nblk * oc).cumsum(0)
        off = offsets[order].to(torch.int32).contiguous()
        val = self.nnz_value[order].contiguous()
        span = max(c * sh * sw * hq * wq, int(off.max()) + lr if off.numel() else 0)
        xbuf = torch.zeros(span + _VL)  # zeroed once: the phase copy never writes the padding cells
        acc = torch.zeros(oc * lr)
        group = 1
        if length > 1 and self.block4:
            rowptr, off, val = blocks4(segment, off, val, self.nnz_index[order, 0], nblk, oc)
            group = 4
        return _Plan(rowptr, off, val, nblk, group, geometry, out_hw, length, xbuf, acc)

    def _source(self, x: torch.Tensor) -> tuple[torch.Tensor, int | None, float]:
        if self.quant is None:
            if x.dtype != torch.float32:
                raise TypeError(f"{type(self).__name__} (FP32) got a {x.dtype} input")
            return x.contiguous(), None, 0.0
        if x.dtype != torch.quint8:
            raise TypeError(f"{type(self).__name__} (INT8) needs a quint8 input, got {x.dtype}")
        return x.contiguous(), int(x.q_zero_point()), float(x.q_scale())

    def _empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.quant is None:
            return torch.empty(shape)
        return torch._empty_affine_quantized(
            shape, scale=self.quant["so"], zero_point=self.quant["zp"], dtype=torch.quint8
        )


class SparseConv2d(_SparseBase):
    """A Conv2d (optionally with a fused ReLU) run by the direct sparse convolution kernel.

    Build with :meth:`from_dense` (FP32 ``nn.Conv2d`` / fused ``ConvReLU2d``) or :meth:`from_quantized`.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        relu: bool = False,
    ) -> None:
        super().__init__(weight, bias, relu)
        self.block4 = is_block4(weight.detach(), groups)
        self.kernel = "lanes"
        self.stride, self.padding, self.dilation, self.groups = (
            tuple(stride),
            tuple(padding),
            tuple(dilation),
            groups,
        )

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, relu: bool = False) -> SparseConv2d:
        """From an FP32 ``nn.Conv2d`` (zeros padding); ``relu`` fuses a following ReLU."""
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}: only explicit zero "
                "padding is supported"
            )
        return cls(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups, relu)

    @classmethod
    def from_quantized(cls, qconv: nn.Module, relu: bool = False) -> SparseConv2d:
        """From a ``torch.ao.nn.quantized.Conv2d`` (or ``ConvReLU2d`` with ``relu=True``)."""
        if qconv.padding_mode != "zeros":
            raise ValueError(f"padding_mode={qconv.padding_mode!r}: only zero padding is supported")
        wq = qconv.weight()
        ints, scale = _int_weight(wq)
        mod = cls(ints, qconv.bias(), qconv.stride, qconv.padding, qconv.dilation, qconv.groups, relu)
        mod._set_int8(scale, qconv.scale, qconv.zero_point)
        in_range = bool(((ints >= -128) & (ints <= 127)).all())  # not so for an asymmetric weight
        if in_range and is_block1x4(ints, qconv.groups) and b4i8_available():
            mod.use_kernel("b4i8")
        return mod

    def use_kernel(self, kernel: str) -> SparseConv2d:
        """Run on ``"lanes"`` (the CSR kernels, FP32 lanes) or ``"b4i8"`` (INT8 1x4 blocks along input
        channels, AVX512-VNNI: see :mod:`shrinkviz.sparse.blocks`); returns ``self``."""
        if kernel == "b4i8" and (self.quant is None or self.groups != 1):
            raise ValueError("the b4i8 kernel runs INT8 convolutions with groups=1 only")
        if kernel not in ("lanes", "b4i8"):
            raise ValueError(f"kernel={kernel!r}: expected 'lanes' or 'b4i8'")
        self.kernel = kernel
        if kernel == "b4i8" and not hasattr(self, "wsum"):
            dense = torch.zeros(self.weight_shape).index_put_(tuple(self.nnz_index.unbind(1)), self.nnz_value)
            self.b4_weight = dense.to(torch.int8)
            self.wsum = dense.sum(dim=(1, 2, 3)).to(torch.int32).contiguous()
            self._b4plans: dict[tuple[int, ...], B4Plan] = {}
        return self

    def _plan(self, c: int, h: int, w: int) -> _Plan:
        key = (c, h, w)
        plan = self._plans.get(key)
        if plan is None:
            oc, cg, kh, kw = self.weight_shape
            if c != cg * self.groups:
                raise ValueError(f"input has {c} channels, the layer expects {cg * self.groups}")
            (sh, sw), (pt, pl), (dh, dw) = self.stride, self.padding, self.dilation
            hp, wp = h + 2 * pt, w + 2 * pl
            oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
            hq, wq = -(-hp // sh), -(-wp // sw)
            o, i, r, s = self.nnz_index.unbind(1)
            ic = (o // (oc // self.groups)) * cg + i
            offsets = (
                ((ic * sh + (r * dh) % sh) * sw + (s * dw) % sw) * hq * wq
                + ((r * dh) // sh) * wq
                + (s * dw) // sw
            )
            rows = (kh - 1) * dh // sh + 1
            plan = self._plans[key] = self._new_plan(
                offsets, ic, (c, h, w, pt, pl, sh, sw, hq, wq), (oh, ow), oh * wq, rows
            )
        return plan

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution of ``x``; ``residual`` (FP32, output-shaped) is added before the fused ReLU."""
        src, zp, sx = self._source(x)
        n, c, h, w = src.shape
        if self.kernel == "b4i8" and residual is None:
            return self._forward_b4i8(src, zp, sx)
        plan = self._plan(c, h, w)
        out = self._empty((n, self.weight_shape[0], *plan.out_hw))
        if residual is not None:
            if self.quant is not None or residual.shape != out.shape or residual.dtype != torch.float32:
                raise ValueError(
                    f"residual of shape {tuple(residual.shape)}: needs an FP32 {tuple(out.shape)}"
                )
            residual = residual.contiguous()
        for b in range(n):
            res = None if residual is None else residual[b]
            self._run(plan, src[b], zp, out[b], sx, res)
        return out

    def _forward_b4i8(self, src: torch.Tensor, zp: int, sx: float) -> torch.Tensor:
        key = tuple(src.shape[1:])
        plan = self._b4plans.get(key)
        if plan is None:
            if key[0] != self.weight_shape[1]:
                raise ValueError(f"input has {key[0]} channels, the layer expects {self.weight_shape[1]}")
            plan = self._b4plans[key] = plan_b4i8(
                self.b4_weight, self.wsum, self.stride, self.padding, self.dilation, *key
            )
        mult, bias_q = self._requant(sx)
        return run_b4i8(plan, src, zp, mult, bias_q, (self.quant["so"], self.quant["zp"]), self.relu)

    def extra_repr(self) -> str:
        return (
            f"{self.weight_shape}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, relu={self.relu}, density={self.density:.3f}, "
            f"{'int8' if self.quant else 'fp32'}, kernel={self.kernel}"
        )


class SparseLinear(_SparseBase):
    """A Linear (optionally with a fused ReLU) run by the sparse kernels: CSR SpMV at batch 1, the
    convolution kernel over the transposed batch otherwise."""

    @classmethod
    def from_dense(cls, linear: nn.Linear, relu: bool = False) -> SparseLinear:
        """From an FP32 ``nn.Linear``; ``relu`` fuses a following ReLU."""
        return cls(linear.weight, linear.bias, relu)

    @classmethod
    def from_quantized(cls, qlinear: nn.Module, relu: bool = False) -> SparseLinear:
        """From a ``torch.ao.nn.quantized.Linear`` (or ``LinearReLU`` with ``relu=True``)."""
        ints, scale = _int_weight(qlinear.weight())
        mod = cls(ints, qlinear.bias(), relu)
        mod._set_int8(scale, qlinear.scale, qlinear.zero_point)
        return mod

    def _plan(self, batch: int) -> _Plan:
        plan = self._plans.get((batch,))
        if plan is None:
            k = self.weight_shape[1]
            offsets = self.nnz_index[:, 1] * batch
            plan = self._plans[(batch,)] = self._new_plan(
                offsets, self.nnz_index[:, 1], (k, 1, batch, 0, 0, 1, 1, 1, batch), (1, batch), batch
            )
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        batch = flat.shape[0]
        src, zp, sx = self._source(flat.t() if batch > 1 else flat)
        out = self._empty((self.weight_shape[0], batch))
        self._run(self._plan(batch), src, zp, out, sx)
        out = out.t().contiguous() if batch > 1 else out.view(1, -1)
        return out.reshape(*lead, self.weight_shape[0])

    def extra_repr(self) -> str:
        return f"{self.weight_shape}, relu={self.relu}, density={self.density:.3f}, {'int8' if self.quant else 'fp32'}"


def _int_weight(wq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
