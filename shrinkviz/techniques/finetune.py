"""Finetuning a (compressed) model with a standard recipe: the loop with the verb contract, no second loop.

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.models import create_model
    >>> from shrinkviz.loop.config import TrainConfig
    >>> ds = load_dataset("digits").subset(train=128, val=32, test=32)
    >>> model = create_model("tiny_mlp", dataset=ds)
    >>> res = finetune(model, ds, cfg=TrainConfig.shrinkbench().replace(epochs=1, augment="none"), progress=False)
    >>> res.model is model, res.history[0]["stage"]
    (True, 'finetune')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from shrinkviz.core.verbs import make_module_callable
from shrinkviz.data import Dataset, as_dataset
from shrinkviz.loop.callbacks import Callback
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import check_masks
from shrinkviz.loop.train import fit
from shrinkviz.techniques.result import Result, as_model

__all__ = ["finetune"]


def finetune(
    model: nn.Module | Result,
    data: Dataset | str,
    cfg: TrainConfig | str | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    device: Any = None,
) -> Result:
    """Finetune ``model`` in place with a standard recipe (ShrinkBench's by default); masks stay enforced.

    Args:
        model: the (pruned, quantized, ...) model, or a :class:`Result`; trained in place.
        data: Dataset or dataset registry name.
        cfg: a TrainConfig or a preset name of ``shrinkviz.loop.config.PRESETS`` (default
            ``DEFAULTS["finetune"]``, ``"shrinkbench"``: SGD lr 1e-3, momentum 0.9, Nesterov, no weight
            decay, constant, 30 epochs, batch 128).
        seed: training seed.
        progress: show a progress bar.
        callbacks: extra :class:`shrinkviz.loop.callbacks.Callback` hooks (pruning masks are added by ``fit``).
        device: training device (default: CUDA when present, else CPU).

    Returns:
        A :class:`Result`: the model itself and the history rows of ``fit`` with ``stage="finetune"``.
    """
    model = as_model(model)
    check_masks(model, "finetune")
    history = fit(
        model,
        as_dataset(data),
        resolve_config(cfg, "finetune"),
        callbacks=callbacks,
        seed=seed,
        device=device,
        stage="finetune",
        progress=progress,
    )
    return Result(model, history)


make_module_callable(__name__, finetune)  # sv.finetune(model, data, ...) runs the verb
