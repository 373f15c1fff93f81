"""Hooks into the training loop (:func:`shrinkviz.loop.train.fit`): masks, QAT and distillation plug in here.

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.loop.train import TrainConfig, fit
    >>> from shrinkviz.models import create_model
    >>> class CountSteps(Callback):
    ...     steps = 0
    ...     def after_step(self, model):
    ...         self.steps += 1
    ...     def epoch_end(self, model, epoch, row):
    ...         row["steps_so_far"] = self.steps
    >>> ds = load_dataset("digits").subset(train=100, val=20, test=20)
    >>> counter = CountSteps()
    >>> cfg = TrainConfig.preset("adam_fast").replace(epochs=2, batch_size=32)  # 4 steps per epoch
    >>> history = fit(create_model("tiny_mlp", dataset=ds), ds, cfg, callbacks=[counter], progress=False)
    >>> counter.steps, [row["steps_so_far"] for row in history]
    (8, [4, 8])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Callback:
    """Hooks into :func:`fit`. Override what you need; every method is optional.

    ``loss`` may replace the task loss (distillation); ``after_step`` runs after every optimizer step
    (pruning masks re-zero weights there); ``epoch_end`` may add columns to the history row.
    """

    def fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first epoch."""

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called before each epoch (1-based)."""

    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        logits: torch.Tensor,
        targets: torch.Tensor,
        task_loss: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """Return (total loss, extra loss terms to log) or None to keep the task loss."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Called after ``loss.backward()`` and before the optimizer step."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimizer step."""

    def epoch_end(self, model: nn.Module, epoch: int, row: dict[str, Any]) -> None:
        """Called after validation; may add entries to ``row``."""

    def fit_end(self, model: nn.Module) -> None:
        """Called once after training (after best-val weights are restored)."""
