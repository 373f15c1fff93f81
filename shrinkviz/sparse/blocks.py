"""Block sparsity patterns the kernels exploit: detection and packing.

* 4x1 blocks along output channels (``block_4x1`` pruning): one input load feeds four output channels
  (``sv_spconv4``, FP32 and INT8-in-FP32-lanes).
* 1x4 blocks along input channels (``block_1x4`` pruning), INT8 convolutions: 4 consecutive input
  channels of one output channel at one kernel tap form one block, run by ``sv_spconv_b4i8`` with AVX512-VNNI
  (``vpdpbusd``: 16 output positions x 4 channels per instruction, exact int32 accumulation); see
  ``kernels/block_int8.c`` for the layout. :func:`b4i8_available` says whether this build has the VNNI
  instruction; without it the modules keep the FP32-lane kernel.

Example:
    >>> import torch
    >>> w = torch.zeros(2, 8, 1, 1)
    >>> w[0, 4:8] = 1.0  # one whole block of 4 input channels
    >>> is_block1x4(w, groups=1), is_block4(w, groups=1)
    (True, False)
"""

from __future__ import annotations

import copy
import ctypes
from dataclasses import dataclass, field, fields

import torch

from shrinkviz.sparse import build

BLOCK_FILL = 0.9
"""Use a block kernel when the nonzeros fill at least this fraction of the blocks they touch (exact
block patterns fill 1.0; a few kept weights that quantize to 0 lower it slightly)."""
_POS = 16  # output positions per vector of the VNNI kernel
_TILE = 16 * _POS  # output positions one tile keeps in registers
_L1_BYTES = 16 * 1024


def is_block4(weight: torch.Tensor, groups: int) -> bool:
    """Whether ``weight``'s nonzeros come in 4x1 blocks along output channels (within one group)."""
    out = weight.shape[0]
    if out % 4 or (out // groups) % 4 or weight.count_nonzero() == 0:
        return False
    live = (weight != 0).reshape(out // 4, 4, -1)
    touched = int(live.any(1).sum())
    return int(live.sum()) >= BLOCK_FILL * 4 * touched


def blocks4(
    segment: torch.Tensor, off: torch.Tensor, val: torch.Tensor, oc: torch.Tensor, nblk: int, out: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR over (channel block, group of 4 output channels): one offset and 4 values per entry."""
    blk = segment // out
    row = blk * (out // 4) + oc // 4
    key = row.to(torch.int64) * (int(off.max()) + 1 if off.numel() else 1) + off.to(torch.int64)
    unique, inverse = torch.unique(key, sorted=True, return_inverse=True)
    values = torch.zeros(unique.numel(), 4)
    values[inverse, oc % 4] = val
    span = int(off.max()) + 1 if off.numel() else 1
    rows = (unique // span).to(torch.int64)
    rowptr = torch.zeros(nblk * (out // 4) + 1, dtype=torch.int32)
    rowptr[1:] = torch.bincount(rows, minlength=nblk * (out // 4)).cumsum(0)
    return rowptr, (unique % span).to(torch.int32).contiguous(), values.reshape(-1).contiguous()


def _input_blocks(weight: torch.Tensor) -> torch.Tensor:
    """(out, ceil(in / 4), *kernel, 4): the weight with input channels padded to a multiple of 4 (zeros)
    and split into blocks of 4, the block lane last."""
    out, cin = weight.shape[:2]
    pad = -cin % 4
    if pad:
        weight = torch.cat([weight, weight.new_zeros(out, pad, *weight.shape[2:])], dim=1)
    blocks = weight.reshape(out, -1, 4, *weight.shape[2:])
    return blocks.movedim(2, -1)


def is_block1x4(weight: torch.Tensor, groups: int) -> bool:
    """Whether ``weight``'s nonzeros come in 1x4 blocks along input channels (``groups`` must be 1); an
    all-zero weight does (no blocks at all)."""
    if groups != 1 or weight.dim() != 4:
        return False
    live = _input_blocks(weight != 0)
    lanes = _input_blocks(torch.ones_like(weight, dtype=torch.bool))  # a last block may be short
    return int(live.sum()) >= BLOCK_FILL * int((lanes & live.any(-1, keepdim=True)).sum())


def b4i8_available() -> bool:
    """Whether the 1x4-block INT8 kernel of this build uses AVX512-VNNI (else it is not offered)."""
    return bool(build.load().sv_vnni_available())


class _Struct(ctypes.Structure):
    """``sv_b4plan`` of ``kernels/block_int8.c``."""

    _fields_ = (
        [
            (name, ctypes.c_int)
            for name in "C H W pt pl sh sw Hq Wq OC nblk L Lr OH OW nnz zp_filled phases shift".split()
        ]
        + [("total", ctypes.c_long)]
        + [
            (name, ctypes.c_void_p)
            for name in ("rowptr", "off", "wv", "wsum", "xbuf", "acc", "mult", "bias_q")
        ]
        + [("zp_out", ctypes.c_int), ("lo", ctypes.c_int), ("add", ctypes.c_void_p)]
    )


@dataclass
class B4Plan:
    """A packed INT8 1x4-block conv for one input shape, with its buffers. The C view of it (``struct``)
    holds raw pointers into these tensors: it is rebuilt, never copied, when the plan is copied."""

    rowptr: torch.Tensor
    off: torch.Tensor
    wv: torch.Tensor
    wsum: torch.Tensor
    nblk: int
    geometry: tuple[int, ...]  # C, H, W, pad_t, pad_l, sh, sw, Hq, Wq (shift: KW, dw, Hp, OW for the last 4)
    out_hw: tuple[int, int]
    length: int
    lr: int
    xbuf: torch.Tensor
    acc: torch.Tensor
    phases: int = -1  # bit ph * sw + pw: the stride phase (ph, pw) is read by some block
    shift: int = 0  # 1: the column-shifted layout, geometry (C, H, W, pt, pl, KW, dw, Hp, OW)
    _struct: _Struct | None = field(default=None, repr=False, compare=False)
    _ref: object = field(default=None, repr=False, compare=False)
    _requant: tuple | None = field(default=None, repr=False, compare=False)

    def struct(self) -> _Struct:
        """The ``sv_b4plan`` the kernel reads (built on first use)."""
        if self._struct is None:
            ptr = {n: getattr(self, n).data_ptr() for n in ("rowptr", "off", "wv", "wsum", "xbuf", "acc")}
            self._struct = _Struct(
                *self.geometry,
                self.wsum.numel(),
                self.nblk,
                self.length,
                self.lr,
                *self.out_hw,
                self.off.numel(),
                -1,
                self.phases,
                self.shift,
                self.xbuf.numel(),
                **ptr,
            )
        return self._struct

    def bind(
        self, key: object, mult: torch.Tensor, bias_q: torch.Tensor, zp_out: int, lo: int, add: object
    ) -> object:
        """The kernel's argument for this plan with these requantization tensors and fused add (a
        ``QAddParams`` or None); the caller keeps them alive and changes ``key`` whenever any of them
        changes (the struct holds their addresses)."""
        if self._requant != key:
            st = self.struct()
            st.mult, st.bias_q, st.zp_out, st.lo = mult.data_ptr(), bias_q.data_ptr(), zp_out, lo
            st.add = None if add is None else ctypes.addressof(add)
            self._requant = key
        if self._ref is None:
            self._ref = ctypes.byref(self.struct())
        return self._ref

    def __deepcopy__(self, memo: dict) -> B4Plan:
        skip = ("_struct", "_ref", "_requant")
        kept = {
            f.name: copy.deepcopy(getattr(self, f.name), memo) for f in fields(self) if f.name not in skip
        }
        return B4Plan(**kept)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_struct": None, "_ref": None, "_requant": None}


def plan_b4i8(
    weight: torch.Tensor,
    wsum: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    c: int,
    h: int,
    w: int,
) -> B4Plan:
    """Pack integer-valued ``weight`` (out, c, kh, kw; every value in int8 range) for a c x h x w input;
    ``wsum`` is the int32 sum of each output channel's weights (the zero-point correction)."""
    oc, _, kh, kw = weight.shape
    (sh, sw), (pt, pl), (dh, dw) = stride, padding, dilation
    hp, wp = h + 2 * pt, w + 2 * pl
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    hq, wq = -(-hp // sh), -(-wp // sw)
    blocks = _input_blocks(weight).to(torch.int8)
    o, c4, r, s = (blocks != 0).any(-1).nonzero().unbind(1)
    values = blocks[o, c4, r, s].contiguous()  # (nnz blocks, 4): lane i = input channel 4 * c4 + i
    groups4 = blocks.shape[1]
    rows = (kh - 1) * dh // sh + 1
    # stride 1: the column-shifted layout (one copy per kernel column, rows OW wide) when dropping the
    # junk columns of the phase layout saves at least a tenth of the work (OW 16, 8, 4; not 32)
    shift = (sh, sw) == (1, 1) and kw > 1 and _ceil16(oh * ow) <= 0.9 * _ceil16(oh * wq)
    if shift:
        off = ((c4 * kw + s) * hp + r * dh) * ow
        geometry, width, copies, planes = (c, h, w, pt, pl, kw, dw, hp, ow), ow, kw, groups4 * kw * hp * ow
    else:
        off = (
            ((c4 * sh + (r * dh) % sh) * sw + (s * dw) % sw) * hq * wq
            + ((r * dh) // sh) * wq
            + (s * dw) // sw
        )
        geometry, width, copies, planes = (
            (c, h, w, pt, pl, sh, sw, hq, wq),
            wq,
            sh * sw,
            groups4 * sh * sw * hq * wq,
        )
    length = oh * width
    lr = _ceil16(length)
    per_group = copies * (-(-min(lr, _TILE) // width) + rows) * width * 4
    nblk = max(1, min(groups4, -(-groups4 * per_group // _L1_BYTES)))
    segment = (c4 // -(-groups4 // nblk)) * oc + o
    order = torch.sort(segment, stable=True).indices
    rowptr = torch.zeros(nblk * oc + 1, dtype=torch.int32)
    rowptr[1:] = torch.bincount(segment, minlength=nblk * oc).cumsum(0)
    off = off[order].to(torch.int32).contiguous()
    span = max(planes, int(off.max()) + lr if off.numel() else 0)
    phase = ((r * dh) % sh) * sw + (s * dw) % sw
    phases = (
        int(torch.bitwise_left_shift(torch.ones_like(phase), phase).unique().sum()) if phase.numel() else 0
    )
    return B4Plan(
        rowptr,
        off,
        values[order].contiguous().view(torch.int32).reshape(-1).contiguous(),
        wsum,
        nblk,
        geometry,
        (oh, ow),
        length,
        lr,
        torch.empty(4 * span + 64, dtype=torch.uint8),
        torch.zeros(oc * lr, dtype=torch.int32),  # stays zero where there are no blocks at all
        phases,
        int(shift),
    )


def _ceil16(n: int) -> int:
    return -(-n // _POS) * _POS


def run_b4i8(
    plan: B4Plan, bound: object, src: torch.Tensor, zp: int, out: torch.Tensor, residual: torch.Tensor | None
) -> torch.Tensor:
    """``src`` (quint8 N x C x H x W, contiguous, zero point ``zp``) into ``out`` (quint8 N x OC x OH x OW,
    contiguous) with the requantization ``bound`` (:meth:`B4Plan.bind`); with ``residual`` (quint8, out's
    shape, contiguous) and a bound fused add, the residual add + ReLU too (``kernels/qadd.c``)."""
    if residual is None:
        res, sr, zr = None, 0.0, 0
    else:
        res, sr, zr = residual.data_ptr(), residual.q_scale(), residual.q_zero_point()
    build.lib().sv_conv_b4i8(
        bound, src.data_ptr(), zp, out.data_ptr(), src.shape[0], res, sr, zr, torch.get_num_threads()
    )
    return out
