"""Pruning: masks that keep zeros through training, ShrinkBench's strategies with exact compression,
your own strategy in a few lines, structured channel pruning that really shrinks the model, and
iterative / gradual schedules.

``shrinkviz.prune`` is both this package and the verb: ``sv.prune(model, ...)`` calls :func:`prune`.

Example:
    >>> import shrinkviz as sv
    >>> model = sv.create_model("tiny_cnn", seed=0)
    >>> pruned = sv.prune(model, strategy="layer_weight", compression=4)
    >>> sv.prune.mask_table(pruned)["sparsity"].round(2).tolist()[:2]
    [0.78, 0.78]
"""

from __future__ import annotations

from shrinkviz._verbs import make_module_callable
from shrinkviz.prune.masks import (
    MaskCallback,
    apply_masks,
    classifier_layers,
    get_masks,
    has_masks,
    mask_callbacks,
    mask_table,
    masked_sparsity,
    masks_from_state_dict,
    prunable_parameters,
    remove_masks,
    set_masks,
)
from shrinkviz.prune.oneshot import prune
from shrinkviz.prune.patterns import nm_compression
from shrinkviz.prune.schedules import GradualPruning, iterative_prune
from shrinkviz.prune.strategies import (
    ScoreContext,
    Strategy,
    available_strategies,
    get_strategy,
    register_strategy,
)
from shrinkviz.prune.structured import ChannelGroup, channel_groups, plan_channels, prune_channels

__all__ = [
    "ChannelGroup", "GradualPruning", "MaskCallback", "ScoreContext", "Strategy", "apply_masks",
    "available_strategies", "channel_groups", "classifier_layers", "get_masks", "get_strategy", "has_masks",
    "iterative_prune", "mask_callbacks", "mask_table", "masked_sparsity", "masks_from_state_dict",
    "nm_compression", "plan_channels", "prunable_parameters", "prune", "prune_channels", "register_strategy", "remove_masks",
    "set_masks",
]


make_module_callable(__name__, prune)  # sv.prune(model, ...) runs the verb; see shrinkviz._verbs
