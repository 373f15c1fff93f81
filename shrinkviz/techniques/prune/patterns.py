"""Pruning patterns the sparse CPU kernels can exploit: whole 1x4 / 4x1 blocks and 2:4 (N:M) groups.

Registered on import of :mod:`shrinkviz.techniques.prune`, used like any strategy::

    prune(model, "block_1x4", compression=10)

* ``block_1x4``: blocks of 4 consecutive input channels (Linear: input features) at one output channel
  and kernel position; ``block_4x1``: 4 consecutive output channels at one input channel and kernel
  position. A block's score is its mean |w| over its live weights (the L1 norm per weight, so the
  shorter blocks at a channel edge compete fairly); blocks are ranked globally over all prunable tensors
  and kept or pruned whole. Exactness: the kept count is the total of whole blocks, in score order,
  nearest to the exact budget of :func:`~shrinkviz.techniques.prune.oneshot.keep_budget`, so the compression is
  exact when the budget is a whole number of blocks and otherwise off by fewer than 4 weights (one
  block; ties go to fewer weights).
* ``nm_2_4``: in every group of 4 consecutive input channels at one output channel and kernel position
  the 2 largest |w| are kept (a shorter edge group keeps at most 2). This fixes the density of every
  pruned tensor at 50%, so the model's compression is fixed too: :func:`nm_compression` gives it, a
  request within 0.5% of it is accepted, any other raises a ValueError naming the reachable ratio.

Example:
    >>> from shrinkviz.models import create_model
    >>> from shrinkviz.techniques.prune import prune
    >>> model = create_model("tiny_cnn", seed=0)
    >>> pruned = prune(model, strategy="nm_2_4", compression=nm_compression(model)).model
    >>> w = pruned.features[1].body[0].conv.weight    # 8 input channels: two full groups of 4
    >>> int((w.permute(0, 2, 3, 1).reshape(-1, 4) != 0).sum(1).max())
    2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shrinkviz.core.layers import count_parameters
from shrinkviz.loop.masks import MASK_SUFFIX, prunable_parameters
from shrinkviz.techniques.prune.strategies import register_strategy

NM_TOLERANCE = 0.005
"""Relative distance to :func:`nm_compression` within which an ``nm_2_4`` request is accepted."""


def _alive(module: nn.Module, attr: str) -> torch.Tensor:
    param = module._parameters[attr].detach()
    mask = module._buffers.get(attr + MASK_SUFFIX)
    return (param != 0) & mask if mask is not None else param != 0


def _groups(x: torch.Tensor, dim: int, size: int, fill: float | bool) -> torch.Tensor:
    """``x`` with ``dim`` moved last and split into groups of ``size`` (padded with ``fill``): (..., g, size)."""
    moved = x.movedim(dim, -1)
    pad = -moved.shape[-1] % size
    if pad:
        moved = torch.cat([moved, moved.new_full((*moved.shape[:-1], pad), fill)], dim=-1)
    return moved.reshape(*moved.shape[:-1], -1, size)


def _ungroup(g: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    n = like.shape[dim]
    flat = g.reshape(*g.shape[:-2], -1)[..., :n]
    return flat.movedim(-1, dim).reshape(like.shape)


class BlockMagnitude:
    """Whole-block magnitude pruning along ``dim`` (1: input channels, 0: output channels)."""

    scope = "global"
    needs_data = False

    def __init__(self, dim: int, size: int = 4) -> None:
        self.dim, self.size = dim, size

    def __call__(self, module: nn.Module, name: str, weight: torch.Tensor, ctx: object) -> torch.Tensor:
        """Each weight scored with its block's mean |w| (what :meth:`select` ranks)."""
        score, _ = self._blocks(weight, weight != 0)
        groups = score.unsqueeze(-1).expand(*score.shape, self.size)
        return _ungroup(groups, weight, self.dim)

    def _blocks(self, weight: torch.Tensor, alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mags = _groups(weight.detach().abs() * alive, self.dim, self.size, 0.0)
        counts = _groups(alive, self.dim, self.size, False).sum(-1)
        return mags.sum(-1) / counts.clamp(min=1), counts

    def select(
        self,
        model: nn.Module,
        strategy: object,
        targets: Sequence[tuple[str, nn.Module, str]],
        keep: int,
        ctx: object,
    ) -> dict[str, torch.Tensor]:
        """Masks keeping whole blocks, globally ranked, totalling the whole-block count nearest ``keep``."""
        scores, counts, alive = [], [], []
        for _, module, attr in targets:
            live = _alive(module, attr)
            s, c = self._blocks(module._parameters[attr], live)
            scores.append(s.masked_fill(c == 0, float("-inf")).reshape(-1))
            counts.append(c.reshape(-1))
            alive.append(live)
        order = torch.sort(torch.cat(scores), descending=True, stable=True).indices
        sizes = torch.cat(counts)[order]
        total = torch.cumsum(sizes, 0)
        taken = int((total <= keep).sum())
        if taken < len(order) and sizes[taken] > 0:
            below, above = int(total[taken - 1]) if taken else 0, int(total[taken])
            taken += int(above - keep < keep - below)
        chosen = torch.zeros(len(order), dtype=torch.bool)
        chosen[order[:taken]] = True
        masks, start = {}, 0
        for (name, _, _), s, live in zip(targets, scores, alive, strict=True):
            part = chosen[start : start + s.numel()]
            start += s.numel()
            groups = part.reshape(*_groups(live, self.dim, self.size, False).shape[:-1], 1)
            masks[name] = _ungroup(groups.expand(*groups.shape[:-1], self.size), live, self.dim) & live
        return masks


def _nm_masks(targets: Sequence[tuple[str, nn.Module, str]], n: int, m: int) -> dict[str, torch.Tensor]:
    masks = {}
    for name, module, attr in targets:
        live = _alive(module, attr)
        mags = _groups(module._parameters[attr].detach().abs() * live, 1, m, -1.0)
        mags = mags.masked_fill(~_groups(live, 1, m, False), -1.0)
        top = torch.topk(mags, n, dim=-1).indices
        keep = torch.zeros_like(mags, dtype=torch.bool).scatter_(-1, top, True) & (mags >= 0)
        masks[name] = _ungroup(keep, live, 1) & live
    return masks


class NMMagnitude:
    """N:M pruning along input channels: the ``n`` largest |w| of every ``m`` consecutive input channels."""

    scope = "global"
    needs_data = False

    def __init__(self, n: int = 2, m: int = 4) -> None:
        self.n, self.m = n, m

    def __call__(self, module: nn.Module, name: str, weight: torch.Tensor, ctx: object) -> torch.Tensor:
        """|w|: the ranking inside each group (the pattern itself is applied by :meth:`select`)."""
        return weight.abs()

    def select(
        self,
        model: nn.Module,
        strategy: object,
        targets: Sequence[tuple[str, nn.Module, str]],
        keep: int,
        ctx: object,
    ) -> dict[str, torch.Tensor]:
        """The N:M masks; ValueError when ``keep`` is not (within tolerance) the count N:M gives."""
        masks = _nm_masks(targets, self.n, self.m)
        total, nonzero = count_parameters(model)
        alive = sum(int(_alive(m, a).sum()) for _, m, a in targets)
        kept = sum(int(mask.sum()) for mask in masks.values())
        wanted, reachable = nonzero - alive + keep, nonzero - alive + kept
        if abs(wanted - reachable) > NM_TOLERANCE * reachable:
            raise ValueError(
                f"{self.n}:{self.m} pruning keeps {self.n} of every {self.m} weights: this model reaches "
                f"compression x{total / reachable:.6g} (total / {reachable:,} nonzero), not "
                f"x{total / wanted:.6g}; pass compression=nm_compression(model)"
            )
        return masks


def nm_compression(model: nn.Module, n: int = 2, m: int = 4, *, include_classifier: bool = False) -> float:
    """The compression ratio (params / nonzero) that ``nm_{n}_{m}`` pruning gives ``model``.

    Example:
        >>> from shrinkviz.models import create_model
        >>> round(nm_compression(create_model("tiny_mlp")), 3)
        1.993
    """
    targets = prunable_parameters(model, include_classifier=include_classifier)
    total, nonzero = count_parameters(model)
    alive = sum(int(_alive(mod, a).sum()) for _, mod, a in targets)
    kept = sum(int(mask.sum()) for mask in _nm_masks(targets, n, m).values())
    return total / (nonzero - alive + kept)


register_strategy("block_1x4", BlockMagnitude(dim=1))
register_strategy("block_4x1", BlockMagnitude(dim=0))
register_strategy("nm_2_4", NMMagnitude(2, 4))
