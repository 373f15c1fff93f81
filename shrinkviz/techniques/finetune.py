"""Notebook verbs that sit on the spine (thin wrappers, no second loop).

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.models import create_model
    >>> from shrinkviz.loop.train import TrainConfig
    >>> ds = load_dataset("digits").subset(train=128, val=32, test=32)
    >>> model = create_model("tiny_mlp", dataset=ds)
    >>> history = finetune(model, ds, TrainConfig.shrinkbench().replace(epochs=1, augment="none"),
    ...                    progress=False)
    >>> history[0]["stage"]
    'finetune'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from shrinkviz.core.verbs import make_module_callable
from shrinkviz.data import Dataset, load_dataset
from shrinkviz.loop.train import Callback, TrainConfig, fit

__all__ = ["finetune"]


def finetune(
    model: nn.Module,
    data: Dataset | str,
    cfg: TrainConfig | str = "shrinkbench",
    *,
    seed: int = 0,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    device: Any = None,
) -> list[dict[str, Any]]:
    """Finetune ``model`` in place with a standard recipe (ShrinkBench's by default); masks stay enforced.

    Args:
        model: the (pruned, quantized, ...) model; trained in place.
        data: Dataset or dataset registry name.
        cfg: a TrainConfig or a preset name of ``shrinkviz.loop.train.PRESETS`` (default ``"shrinkbench"``:
            SGD lr 1e-3, momentum 0.9, Nesterov, no weight decay, constant, 30 epochs, batch 128).
        seed: training seed.
        progress: show a progress bar.
        callbacks: extra :class:`shrinkviz.loop.train.Callback` hooks (pruning masks are added by ``fit``).
        device: training device (default: CUDA when present, else CPU).

    Returns:
        The history rows of :func:`shrinkviz.loop.train.fit` with ``stage="finetune"``.
    """
    cfg = TrainConfig.resolve(cfg)
    if isinstance(data, str):
        data = load_dataset(data)
    return fit(
        model, data, cfg, callbacks=callbacks, seed=seed, device=device, stage="finetune", progress=progress
    )


make_module_callable(__name__, finetune)  # sv.finetune(model, data, ...) runs the verb
