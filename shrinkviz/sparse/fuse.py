"""Graph clean-ups after conversion (FP32): fewer Python module calls around the sparse kernels.

* :func:`unwrap`: a ``ConvBNAct`` whose conv runs on the sparse kernels and whose BN / ReLU were folded
  into it is replaced by the sparse module itself.
* :func:`fuse_residuals`: in a ``Residual`` block (``act(body(x) + shortcut(x))``) whose last body layer
  is a sparse conv without activation, the add and the ReLU move into that conv's epilogue.

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

from shrinkviz.models.base import ConvBNAct, Residual
from shrinkviz.sparse.modules import SparseConv2d


class SparseResidual(nn.Module):
    """``relu(last(head(x)) + shortcut(x))`` with the add and ReLU done by ``last``'s epilogue."""

    def __init__(self, head: nn.Module, last: SparseConv2d, shortcut: nn.Module) -> None:
        super().__init__()
        self.head, self.last, self.shortcut = head, last, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.head(x), residual=self.shortcut(x))


def _children(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()]


def unwrap(model: nn.Module) -> nn.Module:
    """Replace fully folded ``ConvBNAct`` wrappers around sparse convs by the sparse conv (in place)."""
    for parent, name, child in _children(model):
        if isinstance(child, ConvBNAct) and isinstance(child.conv, SparseConv2d):
            if child.bn is None and child.act is None:
                setattr(parent, name, child.conv)
    return model


def fuse_residuals(model: nn.Module) -> nn.Module:
    """Move ``Residual`` adds + ReLU into the epilogue of the block's last sparse conv (in place)."""
    for parent, name, child in _children(model):
        if not (isinstance(child, Residual) and isinstance(child.act, nn.ReLU)):
            continue
        body = child.body
        if not isinstance(body, nn.Sequential) or not len(body):
            continue
        last = body[-1]
        if not isinstance(last, SparseConv2d) or last.relu or last.quant is not None:
            continue
        last.relu = True  # applied after the residual add
        setattr(parent, name, SparseResidual(body[:-1], last, child.shortcut))
    return model
