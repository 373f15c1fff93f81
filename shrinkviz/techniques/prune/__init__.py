"""Pruning: masks that keep zeros through training, ShrinkBench's strategies with exact compression,
your own strategy in a few lines, structured channel pruning that really shrinks the model, and
iterative / gradual schedules.

``shrinkviz.techniques.prune`` is both this package and the verb: ``sv.prune(model, ...)`` calls :func:`prune`.

Example:
    >>> import shrinkviz as sv
    >>> model = sv.create_model("tiny_cnn", seed=0)
    >>> pruned = sv.prune(model, strategy="layer_weight", compression=4).model
    >>> sv.prune.mask_table(pruned)["sparsity"].round(2).tolist()[:2]
    [0.78, 0.78]
"""

from __future__ import annotations

from shrinkviz.core.verbs import make_module_callable
from shrinkviz.loop.masks import (
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
from shrinkviz.techniques.prune.oneshot import apply_pruning, prune
from shrinkviz.techniques.prune.patterns import nm_compression
from shrinkviz.techniques.prune.schedules import GradualPruning, iterative_prune
from shrinkviz.techniques.prune.strategies import (
    STRATEGIES,
    ScoreContext,
    Strategy,
    available_strategies,
    get_strategy,
    register_strategy,
)
from shrinkviz.techniques.prune.structured import ChannelGroup, channel_groups, plan_channels, prune_channels

__all__ = [
    "STRATEGIES",
    "ChannelGroup",
    "GradualPruning",
    "MaskCallback",
    "ScoreContext",
    "Strategy",
    "apply_masks",
    "available_strategies",
    "channel_groups",
    "classifier_layers",
    "apply_pruning",
    "get_masks",
    "get_strategy",
    "has_masks",
    "iterative_prune",
    "mask_callbacks",
    "mask_table",
    "nm_compression",
    "masked_sparsity",
    "masks_from_state_dict",
    "plan_channels",
    "prunable_parameters",
    "prune",
    "prune_channels",
    "register_strategy",
    "remove_masks",
    "set_masks",
]


make_module_callable(__name__, prune)  # sv.prune(model, ...) runs the verb; see shrinkviz.core.verbs
