"""One-shot unstructured pruning to an exact whole-model compression ratio.

The target is ShrinkBench's compression ratio over *all* parameters (BatchNorm, biases and classifier
included): ``params / params_nonzero``. Only the prunable tensors (Conv2d / Linear weights, the
classifier excluded by default) can lose weights, so the number of prunable weights to keep is solved
for: ``keep = round(params / compression) - nonzero parameters outside the prunable tensors``. A global
strategy keeps the ``keep`` best-scoring weights over all tensors; a layerwise one keeps the same fraction
of each tensor (largest-remainder rounding, so the total is still exact and each tensor is within one
weight of the fraction). Ties are broken by a stable sort (earlier tensor / element first), so counts are
exact and repeatable. Weights that are already zero or masked are never revived.

Example:
    >>> from shrinkviz.models import create_model
    >>> from shrinkviz.core.layers import count_parameters
    >>> model = create_model("tiny_cnn", seed=0)
    >>> pruned = prune(model, strategy="global_weight", compression=4).model
    >>> total, nonzero = count_parameters(pruned)
    >>> nonzero == target_nonzero(total, 4), round(total / nonzero, 2)
    (True, 4.0)
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn

from shrinkviz.core.layers import count_parameters
from shrinkviz.data import Dataset, as_dataset, available_datasets
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import MASK_SUFFIX, check_masks, prunable_parameters, set_masks
from shrinkviz.techniques.finetune import finetune
from shrinkviz.techniques.prune.strategies import (
    SCORE_BATCHES,
    ScoreContext,
    Strategy,
    apportion,
    available_strategies,
    check_scores,
    get_strategy,
    target_nonzero,
)
from shrinkviz.techniques.result import Result, as_model

Target = tuple[str, nn.Module, str]


def check_compression(compression: float) -> float:
    """A valid compression ratio as float: a finite number >= 1 (ValueError otherwise)."""
    if isinstance(compression, bool) or not isinstance(compression, numbers.Real):
        raise ValueError(f"compression={compression!r}: must be a number >= 1 (params / nonzero params)")
    if not math.isfinite(compression) or compression < 1:
        raise ValueError(
            f"compression={compression!r}: must be a finite number >= 1 "
            "(params / nonzero params); e.g. 8 keeps one parameter in eight"
        )
    return float(compression)


def _alive(module: nn.Module, attr: str) -> torch.Tensor:
    param = module._parameters[attr].detach()
    alive = param != 0
    mask = module._buffers.get(attr + MASK_SUFFIX)
    return alive & mask if mask is not None else alive


def keep_budget(
    model: nn.Module, targets: Sequence[Target], compression: float, *, clamp: bool = False
) -> int:
    """How many prunable weights stay nonzero so that ``params / nonzero == compression`` (rounded).

    With ``clamp``, a target below the current ratio keeps every weight left instead of raising.

    Raises:
        ValueError: the target needs more than all prunable weights removed (the message gives the
            largest feasible ratio), or fewer than are left already (pruning never revives weights).
    """
    total, nonzero = count_parameters(model)
    alive = sum(int(_alive(module, attr).sum()) for _, module, attr in targets)
    fixed = nonzero - alive
    wanted = target_nonzero(total, compression)
    keep = wanted - fixed
    if keep < 0 or wanted < 1:
        largest = f"x{total / fixed:.4g}" if fixed else f"x{total:.4g}"
        raise ValueError(
            f"compression={compression:g} is infeasible: {fixed:,} nonzero parameters of the {total:,} "
            f"cannot be pruned (BatchNorm, biases, excluded layers), so the largest feasible ratio is "
            f"{largest}; include_classifier=True or prune_bias=True raise it"
        )
    if keep > alive:
        if compression == 1 or clamp:
            return alive
        raise ValueError(
            f"compression={compression:g} is below the model's current x{total / nonzero:.4g}: "
            "pruning removes weights, it cannot restore them"
        )
    return keep


def select_masks(
    model: nn.Module, strategy: Strategy, targets: Sequence[Target], keep: int, ctx: ScoreContext
) -> dict[str, torch.Tensor]:
    """Score every target tensor with ``strategy`` and keep exactly ``keep`` weights (see module doc).

    A strategy whose score callable has a ``select(model, strategy, targets, keep, ctx)`` method chooses
    its own masks (structured patterns: whole blocks, N:M groups; see :mod:`shrinkviz.techniques.prune.patterns`).
    """
    custom = getattr(strategy.score, "select", None)
    if custom is not None:
        return custom(model, strategy, targets, keep, ctx)
    scores, alive = [], []
    for name, module, attr in targets:
        param = module._parameters[attr].detach()
        flat = check_scores(strategy.name, name, strategy.score(module, name, param, ctx), param)
        live = _alive(module, attr).reshape(-1)
        scores.append(flat.masked_fill(~live, float("-inf")))
        alive.append(live)
    if strategy.scope == "global":
        quotas = [keep]
        groups = [torch.cat(scores)]
    else:
        quotas = apportion(keep, [s.numel() for s in scores], [int(a.sum()) for a in alive])
        groups = scores
    kept = []
    for group, quota in zip(groups, quotas, strict=True):
        order = torch.sort(group, descending=True, stable=True).indices
        flat_mask = torch.zeros(group.numel(), dtype=torch.bool, device=group.device)
        flat_mask[order[:quota]] = True
        kept.append(flat_mask)
    if strategy.scope == "global":
        kept = list(torch.split(kept[0], [s.numel() for s in scores]))
    return {
        name: mask.view(module._parameters[attr].shape)
        for (name, module, attr), mask in zip(targets, kept, strict=True)
    }


def apply_pruning(
    model: nn.Module,
    strategy: str = "global_weight",
    compression: float = 8.0,
    *,
    data: Dataset | str | None = None,
    seed: int = 0,
    include_classifier: bool = False,
    prune_bias: bool = False,
    inplace: bool = False,
    score_batches: int = SCORE_BATCHES,
) -> nn.Module:
    """The masking step of :func:`prune`: returns the pruned model itself (no finetuning, no history).

    Building block of the pipeline and the schedules; users call :func:`prune`.

    Raises:
        ValueError: as :func:`prune`; validation happens before anything is modified.
    """
    spec = get_strategy(strategy)
    compression = check_compression(compression)
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise ValueError(f"seed={seed!r}: must be an integer")
    seed = int(seed)
    if (
        not isinstance(score_batches, numbers.Integral)
        or isinstance(score_batches, bool)
        or score_batches < 1
    ):
        raise ValueError(f"score_batches={score_batches!r}: must be a whole number >= 1 (ShrinkBench uses 1)")
    check_masks(model, "prune")
    targets = prunable_parameters(model, include_classifier=include_classifier, prune_bias=prune_bias)
    if not targets:
        raise ValueError(
            f"{type(model).__name__} has no prunable layer (Conv2d / Linear weights"
            f"{'' if include_classifier else ' outside the classifier'}); nothing to prune"
        )
    if spec.needs_data and data is None:
        raise ValueError(
            f"strategy {strategy!r} needs data=<Dataset or dataset name>: it scores weights "
            "with batches of the training split"
        )
    data = as_dataset(data, optional=True)
    keep = keep_budget(model, targets, compression)
    work = model if inplace else copy.deepcopy(model)
    targets = prunable_parameters(work, include_classifier=include_classifier, prune_bias=prune_bias)
    ctx = ScoreContext(work, data, seed, spec.name, n_batches=int(score_batches))
    masks = select_masks(work, spec, targets, keep, ctx)
    return set_masks(work, masks)


def prune(
    model: nn.Module | Result,
    data: Dataset | str | None = None,
    strategy: str = "global_weight",
    compression: float = 8.0,
    *,
    cfg: TrainConfig | str | None = None,
    seed: int = 0,
    include_classifier: bool = False,
    prune_bias: bool = False,
    inplace: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    score_batches: int = SCORE_BATCHES,
) -> Result:
    """Prune ``model`` one-shot to an exact whole-model compression ratio with masks that stay in training,
    then (with ``cfg``) finetune it.

    Args:
        model: a model with Conv2d / Linear layers (registry or any ``nn.Module``), or a :class:`Result`.
        data: Dataset or dataset name; required by gradient and activation strategies and by ``cfg``.
        strategy: a name of :func:`available_strategies` (built-in or registered).
        compression: target ``params / nonzero params`` over the whole model (finite, >= 1).
        cfg: finetune after pruning with this TrainConfig or preset name (``None``: one-shot only).
        seed: seeds the scoring batches, the ``random`` strategy and finetuning.
        include_classifier: also prune the classifier layer.
        prune_bias: also prune Conv2d / Linear biases.
        inplace: prune ``model`` itself; by default a pruned deep copy is returned and ``model`` is untouched.
        progress: show a progress bar while finetuning.
        device: finetuning device (default: CUDA when present, else CPU).
        score_batches: seeded training batches of 128 that gradient / activation scores average over
            (ShrinkBench scores with one batch).

    Returns:
        A :class:`Result`: the pruned model, carrying ``weight_mask`` buffers (see
        :mod:`shrinkviz.loop.masks`), and the finetuning history (empty without ``cfg``).

    Raises:
        ValueError: unknown strategy (did-you-mean), compression < 1 / NaN / infinite / infeasible,
            no prunable layer, missing data. Validation happens before anything is modified.
        TypeError: the 0.1 call form ``prune(model, strategy, compression)`` (its message names the new one).

    Example:
        >>> from shrinkviz.models import create_model
        >>> pruned = prune(create_model("tiny_mlp"), strategy="layer_weight", compression=2).model
        >>> float(pruned.features[1].linear.weight_mask.float().mean()) < 0.6
        True
    """
    if isinstance(data, str) and data in available_strategies() and data not in available_datasets():
        raise TypeError(
            f"prune(model, {data!r}, ...) is the old call form; the second argument is now the data: "
            f"prune(model, data, strategy={data!r}, compression=...) (data may be None for data-free strategies)"
        )
    model = as_model(model)
    if cfg is not None and data is None:
        raise ValueError(
            "prune(..., cfg=...) finetunes after pruning and needs data=<Dataset or dataset name>"
        )
    dataset = as_dataset(data, optional=True)
    pruned = apply_pruning(
        model,
        strategy,
        compression,
        data=dataset,
        seed=seed,
        include_classifier=include_classifier,
        prune_bias=prune_bias,
        inplace=inplace,
        score_batches=score_batches,
    )
    if cfg is None:
        return Result(pruned, [])
    return finetune(
        pruned, dataset, resolve_config(cfg, "prune"), seed=seed, progress=progress, device=device
    )
