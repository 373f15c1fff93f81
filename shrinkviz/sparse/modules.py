"""Sparse Conv2d / Linear modules over the C kernels, FP32 and INT8 (:mod:`shrinkviz.sparse.base` says how
weights are packed and how INT8 is requantized; :mod:`shrinkviz.sparse.blocks` the block kernels;
:mod:`shrinkviz.sparse.int8` the fused residual add).

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(4, 4, 3, padding=1)
    >>> with torch.no_grad():
    ...     _ = conv.weight.mul_(torch.rand_like(conv.weight) < 0.2)
    >>> fast = SparseConv2d.from_dense(conv)  # doctest: +SKIP
    >>> torch.allclose(fast(torch.ones(1, 4, 5, 5)), conv(torch.ones(1, 4, 5, 5)), atol=1e-5)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import torch
from torch import nn

from shrinkviz.sparse.base import Plan, SparseBase
from shrinkviz.sparse.blocks import B4Plan, b4i8_available, is_block1x4, is_block4, plan_b4i8, run_b4i8
from shrinkviz.sparse.int8 import QAddParams, check_residual, int_weight, qadd_params


class SparseConv2d(SparseBase):
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
        self.shifted = True  # layers with OW % 8 == 0 use the column-shifted layout (kernels/sparse.c)
        self.add: QAddParams | None = None  # a fused INT8 residual add (fuse_add)
        self.add_qparams: tuple[float, int] | None = None
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
        ints, scale = int_weight(wq)
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

    def _plan(self, c: int, h: int, w: int) -> Plan:
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
            rows = (kh - 1) * dh // sh + 1
            if self.shifted and ow % 8 == 0 and (kw > 1 or sw > 1):  # aligned loads, no junk columns
                offsets = (((ic * sh + (r * dh) % sh) * kw + s) * hq + (r * dh) // sh) * ow
                geometry = (c, h, w, pt, pl, sh, sw, kw, dw, hq, ow)
                plan = self._new_plan(offsets, ic, geometry, (oh, ow), oh * ow, rows, shift=True)
            else:
                offsets = (
                    ((ic * sh + (r * dh) % sh) * sw + (s * dw) % sw) * hq * wq
                    + ((r * dh) // sh) * wq
                    + (s * dw) // sw
                )
                plan = self._new_plan(offsets, ic, (c, h, w, pt, pl, sh, sw, hq, wq), (oh, ow), oh * wq, rows)
            self._plans[key] = plan
        return plan

    def fuse_add(self, qparams: tuple[float, int], relu: bool) -> SparseConv2d:
        """INT8: take over a following quantized residual add (``QFunctional.add`` into ``qparams``, scale
        and zero point) and, with ``relu``, the quantized ReLU after it; ``forward(x, residual=r)`` then
        returns ``relu(add(conv(x), r))`` bit for bit (:mod:`shrinkviz.sparse.int8`). Returns ``self``."""
        if self.quant is None or self.relu:
            raise ValueError("fuse_add takes an INT8 conv without a fused ReLU of its own")
        self.add_qparams = (float(qparams[0]), int(qparams[1]))
        self.add = qadd_params((self.quant["so"], self.quant["zp"]), self.add_qparams, relu)
        return self

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution of ``x``; ``residual`` (output-shaped) is added before the fused ReLU: FP32, or
        INT8 (quint8) after :meth:`fuse_add`, as the quantized add (the output then has the add's qparams)."""
        src, zp, sx = self._source(x)
        n, c, h, w = src.shape
        if residual is not None and self.quant is not None and self.add is None:
            raise ValueError("an INT8 residual needs fuse_add() first (the add's output qparams)")
        if self.kernel == "b4i8":
            return self._forward_b4i8(src, zp, sx, residual)
        plan = self._plan(c, h, w)
        out = self._empty((n, self.weight_shape[0], *plan.out_hw), fused=residual is not None)
        if residual is not None:
            if self.quant is not None:
                residual = check_residual(residual, tuple(out.shape))
            elif residual.shape != out.shape or residual.dtype != torch.float32:
                raise ValueError(
                    f"residual of shape {tuple(residual.shape)}: needs an FP32 {tuple(out.shape)}"
                )
            residual = residual.contiguous()
        for b in range(n):
            res = None if residual is None else (residual, b) if self.quant is not None else residual[b]
            self._run(plan, src[b], zp, out[b], sx, res)
        return out

    def _forward_b4i8(
        self, src: torch.Tensor, zp: int, sx: float, residual: torch.Tensor | None
    ) -> torch.Tensor:
        key = src.shape[1:]
        plan = self._b4plans.get(key)
        if plan is None:
            if key[0] != self.weight_shape[1]:
                raise ValueError(f"input has {key[0]} channels, the layer expects {self.weight_shape[1]}")
            plan = self._b4plans[key] = plan_b4i8(
                self.b4_weight, self.wsum, self.stride, self.padding, self.dilation, *key
            )
        mult, bias_q = self._requant(sx)
        zp_out = self.quant["zp"]
        add = self.add
        bound = plan.bind((sx, id(add)), mult, bias_q, zp_out, zp_out if self.relu else 0, add)
        out = self._empty((src.shape[0], self.weight_shape[0], *plan.out_hw), fused=residual is not None)
        if residual is not None:
            residual = check_residual(residual, tuple(out.shape))
        return run_b4i8(plan, bound, src, zp, out, residual)

    def extra_repr(self) -> str:
        return (
            f"{self.weight_shape}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, relu={self.relu}, density={self.density:.3f}, "
            f"{'int8' if self.quant else 'fp32'}, kernel={self.kernel}"
        )


class SparseLinear(SparseBase):
    """A Linear (optionally with a fused ReLU) run by the sparse kernels: CSR SpMV at batch 1, the
    convolution kernel over the transposed batch otherwise."""

    @classmethod
    def from_dense(cls, linear: nn.Linear, relu: bool = False) -> SparseLinear:
        """From an FP32 ``nn.Linear``; ``relu`` fuses a following ReLU."""
        return cls(linear.weight, linear.bias, relu)

    @classmethod
    def from_quantized(cls, qlinear: nn.Module, relu: bool = False) -> SparseLinear:
        """From a ``torch.ao.nn.quantized.Linear`` (or ``LinearReLU`` with ``relu=True``)."""
        ints, scale = int_weight(qlinear.weight())
        mod = cls(ints, qlinear.bias(), relu)
        mod._set_int8(scale, qlinear.scale, qlinear.zero_point)
        return mod

    def _plan(self, batch: int) -> Plan:
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
