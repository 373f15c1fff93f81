"""Graph clean-ups after conversion (FP32 and INT8): fewer Python module calls around the sparse kernels.

* :func:`unwrap`: a ``ConvBNAct`` whose BN and activation were folded into its conv (``None`` or, in an
  eager-converted INT8 model, ``Identity``) is replaced by the conv itself, sparse or dense.
* :func:`fuse_residuals`: in a ``Residual`` block (``act(body(x) + shortcut(x))``) whose last body layer
  is a sparse conv without activation, the add and the ReLU move into that conv's epilogue: FP32, or INT8
  with the quantized add's semantics reproduced bit for bit (:mod:`shrinkviz.sparse.int8`) where torch runs
  its AVX2 / AVX-512 kernels (under ``ATEN_CPU_CAPABILITY=default`` the INT8 add is left to torch).

Example:
    >>> from torch import nn
    >>> unwrap(nn.Sequential(nn.ReLU()))  # nothing to do: the model is returned as is
    Sequential(
      (0): ReLU()
    )
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.nn.quantized import QFunctional

from shrinkviz.models.base import ConvBNAct, Residual
from shrinkviz.sparse.int8 import vector_step
from shrinkviz.sparse.modules import SparseConv2d


class SparseResidual(nn.Module):
    """``relu(last(head(x)) + shortcut(x))`` with the add and ReLU done by ``last``'s epilogue (a one-layer
    head is called directly, an identity shortcut not at all)."""

    def __init__(self, head: nn.Module, last: SparseConv2d, shortcut: nn.Module) -> None:
        super().__init__()
        if isinstance(head, nn.Sequential) and len(head) == 1:
            head = head[0]
        self.head, self.last, self.shortcut = head, last, shortcut
        self.identity = isinstance(shortcut, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.head(x), residual=x if self.identity else self.shortcut(x))


def _children(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]


def _folded(part: nn.Module | None) -> bool:
    return part is None or isinstance(part, nn.Identity)


def unwrap(model: nn.Module) -> nn.Module:
    """Replace fully folded ``ConvBNAct`` wrappers by their conv (in place)."""
    for parent, name, child in _children(model):
        if isinstance(child, ConvBNAct) and _folded(child.bn) and _folded(getattr(child, "act", None)):
            setattr(parent, name, child.conv)
    return model


def fuse_residuals(model: nn.Module) -> nn.Module:
    """Move ``Residual`` adds + ReLU into the epilogue of the block's last sparse conv (in place)."""
    for parent, name, child in _children(model):
        if not isinstance(child, Residual):
            continue
        body = child.body
        if not isinstance(body, nn.Sequential) or not len(body):
            continue
        last = body[-1]
        if not isinstance(last, SparseConv2d) or last.relu:
            continue
        if last.quant is None:
            if not isinstance(child.act, nn.ReLU):
                continue
            last.relu = True  # applied after the residual add
        else:
            add = child.add  # after torch.ao's conversion, a QFunctional holding the add's output qparams
            if not isinstance(add, QFunctional) or not isinstance(child.act, nn.ReLU | nn.Identity):
                continue
            if not vector_step():  # torch without vector kernels rounds differently: keep its add
                continue
            last.fuse_add((float(add.scale), int(add.zero_point)), relu=isinstance(child.act, nn.ReLU))
        setattr(parent, name, SparseResidual(body[:-1], last, child.shortcut))
    return model
