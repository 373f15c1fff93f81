"""What the sparse Conv2d / Linear modules share: weights packed once, per-shape plans, the kernel calls and
epilogues, FP32 and INT8 (inference only: no autograd through the kernels).

A weight is packed at construction into CSR over output channels: per output channel the flat offsets
of its nonzeros into the input buffer and their values. The buffer holds the input in the phase layout
(one zero-padded image per stride phase), or, for convs whose output width is a multiple of 8, in the
column-shifted layout (one copy per row phase and kernel column, rows as wide as the output: aligned
vector loads, no junk columns; 1.2-1.3x faster per layer, ``kernels/sparse.c``). Weights whose nonzeros
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
oneDNN on VNNI CPUs, whose requantization rounds differently in rare cases (one step, 1-2 outputs per 131k
measured here). Residual adds fused into these convs (:mod:`shrinkviz.sparse.int8`)
match torch.ao's quantized add bit for bit too. On a CPU with AVX2 but no VNNI, fbgemm itself sums pairs of
uint8 x int8 products into saturating int16 (``vpmaddubsw``), so with activations above 127 against large
weights its outputs are clipped (seen here: 6 steps on one output of a 12x40 linear layer) while these kernels
stay exact; below that they agree bit for bit there too (``tests/sparse``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinkviz.sparse import build
from shrinkviz.sparse.blocks import blocks4, is_block4

_VL = 8  # floats per vector in the kernels
_L1_BYTES = 16 * 1024  # input slice per tile and channel block: half a typical 32 KiB L1D


def _ceil8(n: int) -> int:
    return -(-n // _VL) * _VL


@dataclass
class Plan:
    rowptr: torch.Tensor
    off: torch.Tensor
    val: torch.Tensor
    nblk: int
    group: int  # 4: rows are 4x1 blocks of output channels (sv_spconv4), else 1
    geometry: tuple[int, ...]  # C, H, W, pad_t, pad_l, sh, sw, Hq, Wq (shift: sh, sw, KW, dw, Hq, OW)
    out_hw: tuple[int, int]
    length: int
    xbuf: torch.Tensor
    acc: torch.Tensor
    shift: bool = False  # the column-shifted layout (sv_shift_*), else the phase layout (sv_phase_*)


class SparseBase(nn.Module):
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
        self._plans: dict[tuple[int, ...], Plan] = {}
        self.block4 = is_block4(weight, groups=1)
        build.load()  # fail at construction, not at the first call, where the kernels are unavailable

    @property
    def _lib(self) -> Any:
        return build.lib()  # not an attribute: a ctypes library cannot be deep-copied or pickled

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
        plan: Plan,
        src: torch.Tensor,
        zp: int | None,
        out: torch.Tensor,
        sx: float = 0.0,
        res: torch.Tensor | tuple[torch.Tensor, int] | None = None,
    ) -> None:
        """One image through the plan into ``out``; ``res``: the residual, FP32 (this image's) or INT8
        (the whole batch and the image's index, for the fused add's split of the tensor)."""
        lib, g = self._lib, plan.geometry
        if zp is None:
            (lib.sv_shift_f32 if plan.shift else lib.sv_phase_f32)(src.data_ptr(), *g, plan.xbuf.data_ptr())
        else:
            (lib.sv_shift_u8 if plan.shift else lib.sv_phase_u8)(src.data_ptr(), zp, *g, plan.xbuf.data_ptr())
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
                plan.acc.data_ptr(), oc, lr, oh, ow, g[-1], None, bias, rptr, int(self.relu), out.data_ptr()
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
                g[-1],
                mult.data_ptr(),
                bias_q.data_ptr(),
                zp_out,
                zp_out if self.relu else 0,
                out.data_ptr(),
            )
            if res is not None:  # the fused quantized residual add + ReLU, in place (res: (tensor, index))
                whole, b = res
                n = out.numel()
                o, r = out.data_ptr(), whole.data_ptr() + b * n
                sr, zr, threads = whole.q_scale(), whole.q_zero_point(), torch.get_num_threads()
                lib.sv_qadd_u8(ctypes.addressof(self.add), o, r, sr, zr, o, n, b * n, whole.numel(), threads)

    def _new_plan(
        self,
        offsets: torch.Tensor,
        channel: torch.Tensor,
        geometry: tuple[int, ...],
        out_hw: tuple[int, int],
        length: int,
        rows: int = 1,
        shift: bool = False,
    ) -> Plan:
        """``rows``: input rows (of the phase images) one output tile reads per channel and phase (or, with
        ``shift``, per kernel column of the column-shifted layout)."""
        if shift:  # one copy per row phase and kernel column
            c, sh, kw, hq, wq = geometry[0], geometry[5], geometry[7], geometry[9], geometry[10]
            copies = sh * kw
        else:  # one copy per row and column phase
            c, sh, sw, hq, wq = geometry[0], geometry[5], geometry[6], geometry[7], geometry[8]
            copies = sh * sw
        oc = self.weight_shape[0]
        lr = _ceil8(length) if length > 1 else 1
        nblk = 1
        if length > 1:  # input-channel blocks whose slice read by one tile fits in L1
            tile = min(lr, self._lib.sv_tile_floats())  # output floats one tile keeps in registers
            per_channel = copies * (-(-tile // wq) + rows) * wq * 4
            nblk = max(1, min(c, -(-c * per_channel // _L1_BYTES)))
        block = -(-c // nblk)
        order = torch.sort((channel // block) * oc + self.nnz_index[:, 0], stable=True).indices
        segment = ((channel // block) * oc + self.nnz_index[:, 0])[order]
        rowptr = torch.zeros(nblk * oc + 1, dtype=torch.int32)
        rowptr[1:] = torch.bincount(segment, minlength=nblk * oc).cumsum(0)
        off = offsets[order].to(torch.int32).contiguous()
        val = self.nnz_value[order].contiguous()
        span = max(c * copies * hq * wq, int(off.max()) + lr if off.numel() else 0)
        xbuf = torch.zeros(span + _VL)  # zeroed once: the phase copy never writes the padding cells
        acc = torch.zeros(oc * lr)
        group = 1
        if length > 1 and self.block4:
            rowptr, off, val = blocks4(segment, off, val, self.nnz_index[order, 0], nblk, oc)
            group = 4
        return Plan(rowptr, off, val, nblk, group, geometry, out_hw, length, xbuf, acc, shift)

    def _source(self, x: torch.Tensor) -> tuple[torch.Tensor, int | None, float]:
        if self.quant is None:
            if x.dtype != torch.float32:
                raise TypeError(f"{type(self).__name__} (FP32) got a {x.dtype} input")
            return x.contiguous(), None, 0.0
        if x.dtype != torch.quint8:
            raise TypeError(f"{type(self).__name__} (INT8) needs a quint8 input, got {x.dtype}")
        return x.contiguous(), int(x.q_zero_point()), float(x.q_scale())

    def _empty(self, shape: tuple[int, ...], fused: bool = False) -> torch.Tensor:
        """The output: FP32, or quint8 with the conv's qparams (the fused add's with ``fused``)."""
        if self.quant is None:
            return torch.empty(shape)
        scale, zp = self.add_qparams if fused else (self.quant["so"], self.quant["zp"])
        return torch._empty_affine_quantized(shape, scale=scale, zero_point=zp, dtype=torch.quint8)
