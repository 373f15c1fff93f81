"""Structured pruning: remove whole conv filters / hidden units and get a smaller *dense* model.

Unstructured sparsity does not speed up dense CPU kernels; removing channels does. Registry models are
built from a few blocks (``ConvBNAct``, ``Residual(body, shortcut)``, ``LinearAct``, pooling, Flatten), so
the channel dependencies are read off that structure (no graph tracer): walking ``model.features`` then
``model.classifier``, every conv / linear output starts a *channel group* holding its producers (conv /
linear layers whose output rows are these channels), the BatchNorms that normalise them, and the
consumers (layers whose input columns read them; a Linear after a Flatten reads ``H x W`` columns per
channel). A ``Residual`` add ties its body's and its shortcut's output groups into one group, so all
channels joined by identity shortcuts are pruned together, scored by the sum of their producers' filter
norms (Torch-Pruning's grouping). Both internal (inside a block) and residual groups are pruned by
default; ``prune_residual=False`` prunes internal channels only. The input channels and the class
logits are never pruned.

Example:
    >>> from shrinkviz.models import create_model
    >>> from shrinkviz.core.layers import count_parameters
    >>> model = create_model("resnet20", seed=0)
    >>> small = prune_channels(model, keep=0.5).model
    >>> count_parameters(small)[0] < count_parameters(model)[0] / 3
    True
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn

from shrinkviz.data import Dataset
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import MASK_SUFFIX
from shrinkviz.models.base import ConvBNAct, Features, LinearAct, Residual, ShrinkNet
from shrinkviz.techniques.finetune import finetune
from shrinkviz.techniques.result import Result, as_model

NORMS = ("l1", "l2")
_PASSTHROUGH = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Identity,
    nn.Dropout,
)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together.

    Attributes:
        producers: conv / linear layers whose output channels (weight rows, biases) these are.
        norms: BatchNorm layers over these channels.
        consumers: conv / linear layers reading these channels (weight columns).
        channels: how many channels the group has.
        residual: tied through a residual add.
    """

    producers: tuple[str, ...]
    norms: tuple[str, ...]
    consumers: tuple[str, ...]
    channels: int
    residual: bool


@dataclass(frozen=True)
class ChannelPlan:
    """A group and the (sorted) indices of the channels it keeps."""

    group: ChannelGroup
    kept: torch.Tensor


@dataclass(eq=False)
class _Group:
    channels: int
    fixed: str = ""
    producers: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    residual: bool = False
    parent: _Group | None = None

    def find(self) -> _Group:
        group = self
        while group.parent is not None:
            group = group.parent
        return group


class _Walker:
    """Builds channel groups from the block structure of a registry model."""

    def __init__(self) -> None:
        self.groups: list[_Group] = []

    def new(self, channels: int, fixed: str = "") -> _Group:
        group = _Group(channels, fixed)
        self.groups.append(group)
        return group

    @staticmethod
    def fail(name: str, module: nn.Module, why: str) -> ValueError:
        return ValueError(
            f"prune_channels: cannot shrink {name or 'the model'!r} ({type(module).__name__}) "
            f"consistently: {why}"
        )

    def walk(self, module: nn.Module, name: str, group: _Group, flat: bool) -> tuple[_Group, bool]:
        prefix = f"{name}." if name else ""
        group = group.find()
        if type(module) in (nn.Sequential, Features):
            for child_name, child in module.named_children():
                group, flat = self.walk(child, prefix + child_name, group, flat)
            return group, flat
        if type(module) is ConvBNAct:
            group, flat = self.walk(module.conv, prefix + "conv", group, flat)
            if module.bn is not None:
                group, flat = self.walk(module.bn, prefix + "bn", group, flat)
            return group, flat
        if type(module) is LinearAct:
            return self.walk(module.linear, prefix + "linear", group, flat)
        if type(module) is Residual:
            body, body_flat = self.walk(module.body, prefix + "body", group, flat)
            short, short_flat = self.walk(module.shortcut, prefix + "shortcut", group, flat)
            body, short = body.find(), short.find()
            if body.channels != short.channels or body_flat != short_flat:
                raise self.fail(name, module, "its body and shortcut outputs differ in shape")
            if body is not short and self.groups.index(short) < self.groups.index(body):
                body, short = short, body  # the older group stays the root: producers listed in model order
            if body is not short:
                body.producers += short.producers
                body.norms += short.norms
                body.consumers += short.consumers
                body.fixed = body.fixed or short.fixed
                short.parent = body
            body.residual = True
            return body, body_flat
        if type(module) is nn.Conv2d:
            if flat:
                raise self.fail(name, module, "it follows a Flatten")
            if module.groups != 1:
                raise self.fail(
                    name,
                    module,
                    f"groups={module.groups}: grouped convolutions tie input and "
                    "output channels group by group, which this walker does not model",
                )
            if module.in_channels != group.channels:
                raise self.fail(
                    name,
                    module,
                    f"it reads {module.in_channels} channels, the block before produces {group.channels}",
                )
            group.consumers.append(name)
            out = self.new(module.out_channels)
            out.producers.append(name)
            return out, False
        if type(module) is nn.Linear:
            if not flat:
                raise self.fail(name, module, "it is applied to a 4-D feature map (no Flatten before it)")
            if module.in_features % group.channels:
                raise self.fail(
                    name,
                    module,
                    f"in_features={module.in_features} is not a multiple of the "
                    f"{group.channels} channels before it",
                )
            group.consumers.append(name)
            out = self.new(module.out_features)
            out.producers.append(name)
            return out, True
        if type(module) in (nn.BatchNorm2d, nn.BatchNorm1d):
            if module.num_features != group.channels:
                raise self.fail(
                    name,
                    module,
                    f"num_features={module.num_features}, the layer before "
                    f"produces {group.channels} channels",
                )
            group.norms.append(name)
            return group, flat
        if type(module) is nn.Flatten:
            return group, True
        if isinstance(module, _PASSTHROUGH):
            return group, flat
        raise self.fail(
            name,
            module,
            "not one of the blocks it understands (ConvBNAct, Residual, LinearAct, "
            "Sequential, Conv2d, Linear, BatchNorm, Flatten, pooling, ReLU, Identity, Dropout); "
            "prune channels on the float model before fusion or quantization",
        )


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """Every prunable channel group of a registry model (input channels and logits excluded).

    Raises:
        ValueError: the model is not a standard ``ShrinkNet`` or holds a layer that cannot be shrunk
            consistently (named, with the reason).

    Example:
        >>> from shrinkviz.models import create_model
        >>> [g.channels for g in channel_groups(create_model("tiny_mlp"))]
        [32]
    """
    if not isinstance(model, ShrinkNet) or type(model).forward is not ShrinkNet.forward:
        raise ValueError(
            f"prune_channels: {type(model).__name__} is not a registry model (a ShrinkNet with "
            "the standard forward features -> flatten -> classifier); its channel dependencies "
            "are unknown"
        )
    walker = _Walker()
    start = walker.new(model.input_shape[0], fixed="input channels")
    group, _ = walker.walk(model.features, "features", start, False)
    group, _ = walker.walk(model.classifier, "classifier", group, True)
    group.find().fixed = group.find().fixed or "class logits"
    roots = []
    for g in walker.groups:
        if g.parent is None and not g.fixed and g.producers:
            roots.append(
                ChannelGroup(tuple(g.producers), tuple(g.norms), tuple(g.consumers), g.channels, g.residual)
            )
    return roots


def channel_importance(model: nn.Module, group: ChannelGroup, norm: str = "l2") -> torch.Tensor:
    """Per-channel importance: the sum over the group's producers of each output filter's L1 / L2 norm."""
    score = torch.zeros(group.channels, dtype=torch.float64)
    for name in group.producers:
        rows = model.get_submodule(name).weight.detach().reshape(group.channels, -1).double().cpu()
        score += rows.abs().sum(1) if norm == "l1" else rows.pow(2).sum(1).sqrt()
    return score


def _check_keep(keep: float) -> float:
    valid = isinstance(keep, numbers.Real) and not isinstance(keep, bool) and math.isfinite(keep)
    if not valid or not 0 < keep <= 1:
        raise ValueError(f"keep={keep!r}: must be the fraction of channels kept per group, in (0, 1]")
    return float(keep)


def plan_channels(
    model: nn.Module, keep: float = 0.5, norm: str = "l2", *, prune_residual: bool = True
) -> list[ChannelPlan]:
    """Which channels :func:`prune_channels` keeps: per group, ``max(1, round(keep x channels))`` of the
    highest-importance channels (stable order on ties), indices sorted. Nothing is modified."""
    keep = _check_keep(keep)
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; valid: {', '.join(NORMS)}")
    plans = []
    for group in channel_groups(model):
        if group.residual and not prune_residual:
            continue
        n_keep = max(1, math.floor(keep * group.channels + 0.5))
        order = torch.sort(channel_importance(model, group, norm), descending=True, stable=True).indices
        plans.append(ChannelPlan(group, order[:n_keep].sort().values))
    return plans


def _slice(module: nn.Module, attr: str, dim: int, index: torch.Tensor) -> None:
    stores = ((module._parameters, attr), (module._buffers, attr), (module._buffers, attr + MASK_SUFFIX))
    for store, key in stores:
        tensor = store.get(key)
        if tensor is None:
            continue
        new = tensor.detach().index_select(dim, index.to(tensor.device)).clone()
        if isinstance(tensor, nn.Parameter):
            new = nn.Parameter(new, requires_grad=tensor.requires_grad)
        store[key] = new


def apply_plan(model: nn.Module, plans: list[ChannelPlan]) -> nn.Module:
    """Physically remove the channels ``plans`` drop, in place; returns ``model``."""
    for plan in plans:
        group, kept = plan.group, plan.kept
        for name in group.producers:
            module = model.get_submodule(name)
            _slice(module, "weight", 0, kept)
            _slice(module, "bias", 0, kept)
            if isinstance(module, nn.Conv2d):
                module.out_channels = len(kept)
            else:
                module.out_features = len(kept)
        for name in group.norms:
            module = model.get_submodule(name)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _slice(module, attr, 0, kept)
            module.num_features = len(kept)
        for name in group.consumers:
            module = model.get_submodule(name)
            if isinstance(module, nn.Conv2d):
                _slice(module, "weight", 1, kept)
                module.in_channels = len(kept)
            else:
                factor = module.in_features // group.channels
                columns = (kept[:, None] * factor + torch.arange(factor)).reshape(-1)
                _slice(module, "weight", 1, columns)
                module.in_features = len(columns)
    return model


def prune_channels(
    model: nn.Module | Result,
    data: Dataset | str | None = None,
    keep: float = 0.5,
    norm: str = "l2",
    *,
    cfg: TrainConfig | str | None = None,
    prune_residual: bool = True,
    inplace: bool = False,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> Result:
    """Remove the lowest-norm conv filters / hidden units of every channel group: a smaller dense model,
    then (with ``cfg``) finetune it.

    Args:
        model: a registry model (float, before fusion / QAT), or a :class:`Result`.
        data: Dataset or dataset name, needed only to finetune (``cfg``).
        keep: fraction of channels kept in each group, in (0, 1] (at least one channel stays).
        norm: ``"l1"`` or ``"l2"`` norm of each output filter, summed over a group's producers.
        cfg: finetune the smaller model with this TrainConfig or preset name (``None``: no training).
        prune_residual: also prune channel groups tied through residual adds (needed for real speedups
            on ResNets); False prunes only channels internal to blocks.
        inplace: modify ``model``; by default a pruned deep copy is returned.
        seed, progress, device: of the finetuning, as in :func:`shrinkviz.loop.train.fit`.

    Returns:
        A :class:`Result` with the smaller model (BatchNorms, the next layers and
        ``classifier.in_features`` consistent; pruning masks the model carries are sliced along) and the
        finetuning history (empty without ``cfg``).

    Raises:
        ValueError: bad ``keep`` / ``norm``, or a layer that cannot be shrunk consistently (named, with the
            reason). Nothing is modified.
        TypeError: the 0.1 call form ``prune_channels(model, keep)`` (its message names the new one).

    Example:
        >>> from shrinkviz.models import create_model
        >>> prune_channels(create_model("lenet5"), keep=0.5).model.classifier.in_features
        42
    """
    if isinstance(data, int | float) and not isinstance(data, bool):
        raise TypeError(
            f"prune_channels(model, {data!r}) is the old call form; the second argument is now the data: "
            f"prune_channels(model, data, keep={data!r}) (data may be None without cfg)"
        )
    model = as_model(model)
    if cfg is not None and data is None:
        raise ValueError("prune_channels(..., cfg=...) finetunes and needs data=<Dataset or dataset name>")
    plans = plan_channels(model, keep, norm, prune_residual=prune_residual)
    work = apply_plan(model if inplace else copy.deepcopy(model), plans)
    if cfg is None:
        return Result(work, [])
    return finetune(
        work, data, resolve_config(cfg, "prune_channels"), seed=seed, progress=progress, device=device
    )
