"""THE training and evaluation loop of shrinkviz. Pruning masks, QAT and distillation plug into it
through callbacks; nobody writes a second loop.

Hyperparameters live in one frozen dataclass, :class:`TrainConfig`, with named presets (ShrinkBench's
finetuning default among them) so that finetuning can be held fixed or varied as a controlled factor.

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.models import create_model
    >>> ds = load_dataset("digits").subset(train=256, val=64, test=64)
    >>> model = create_model("tiny_mlp", dataset=ds)
    >>> history = fit(model, ds, TrainConfig.preset("adam_fast").replace(epochs=1))
    >>> sorted(history[0])[:3]
    ['epoch', 'epoch_s', 'kd_loss']
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from shrinkviz.data import AUGMENTATIONS, Dataset, Normalizer, Split, batches
from shrinkviz.device import resolve_device

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
SELECTIONS = ("last", "best_val")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of one training stage.

    Attributes:
        epochs: passes over the training split (>= 1).
        batch_size: examples per step.
        optimizer: one of ``OPTIMIZERS``.
        lr: peak learning rate (> 0).
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        weight_decay: L2 penalty (>= 0); decoupled for AdamW.
        schedule: one of ``SCHEDULES``; ``step`` multiplies by ``gamma`` at each epoch in ``milestones``.
        milestones: epochs (1-based) at which the ``step`` schedule decays.
        gamma: decay factor of the ``step`` schedule.
        warmup_epochs: linear warm-up before the schedule.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        augment: ``auto`` (the dataset's standard augmentation, ``Dataset.augment``) or one of
            ``shrinkviz.data.AUGMENTATIONS``.
        select: ``last`` keeps the final weights, ``best_val`` restores the epoch with the best
            validation top-1 (the test split is never used for selection).
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    augment: str = "auto"
    select: str = "last"

    def __post_init__(self) -> None:
        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"TrainConfig.{field_name}={getattr(self, field_name)!r}: {why}")

        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "must be a whole number >= 1")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", "must be a whole number >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"unknown optimizer; valid: {', '.join(OPTIMIZERS)}")
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "must be a finite number > 0")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "must be a finite number >= 0")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"unknown schedule; valid: {', '.join(SCHEDULES)}")
        if any(not isinstance(m, int) or m < 1 for m in self.milestones):
            raise bad("milestones", "must be epochs >= 1")
        if not 0 < self.gamma <= 1:
            raise bad("gamma", "must be in (0, 1]")
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs + 1:
            raise bad("warmup_epochs", "must be a whole number in [0, epochs]")
        if not 0 <= self.label_smoothing < 1:
            raise bad("label_smoothing", "must be in [0, 1)")
        if self.augment != "auto" and self.augment not in AUGMENTATIONS:
            raise bad("augment", f"valid: auto, {', '.join(AUGMENTATIONS)}")
        if self.select not in SELECTIONS:
            raise bad("select", f"valid: {', '.join(SELECTIONS)}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise bad("nesterov", "needs optimizer='sgd' with momentum > 0")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        data = dict(data)
        if "milestones" in data:
            data["milestones"] = tuple(data["milestones"])
        return cls(**data)

    @classmethod
    def preset(cls, name: str) -> TrainConfig:
        """A named preset; see :data:`PRESETS`."""
        if name not in PRESETS:
            raise ValueError(f"unknown training preset {name!r}; valid: {', '.join(sorted(PRESETS))}")
        return PRESETS[name]

    @classmethod
    def resolve(cls, cfg: TrainConfig | str, field: str = "cfg") -> TrainConfig:
        """A config given as itself or as a preset name (what every verb taking ``cfg`` accepts).

        Example:
            >>> TrainConfig.resolve("shrinkbench") == TrainConfig.shrinkbench()
            True
        """
        if isinstance(cfg, TrainConfig):
            return cfg
        if isinstance(cfg, str):
            return cls.preset(cfg)
        raise TypeError(f"{field}={cfg!r}: give a TrainConfig or a preset name ({', '.join(sorted(PRESETS))})")

    @classmethod
    def shrinkbench(cls) -> TrainConfig:
        """ShrinkBench's default finetuning: SGD lr 1e-3, momentum 0.9, Nesterov, no weight decay, no
        schedule, 30 epochs, batch 128."""
        return PRESETS["shrinkbench"]


PRESETS: dict[str, TrainConfig] = {
    "shrinkbench": TrainConfig(epochs=30, batch_size=128, optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=True,
                               weight_decay=0.0, schedule="constant", augment="auto"),
    "shrinkbench_adam": TrainConfig(epochs=30, batch_size=128, optimizer="adam", lr=1e-4, momentum=0.0,
                                    weight_decay=0.0, schedule="constant", augment="auto"),
    "cifar_sgd": TrainConfig(epochs=200, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9,
                             weight_decay=5e-4, schedule="cosine", augment="auto"),
    "adam_fast": TrainConfig(epochs=10, batch_size=128, optimizer="adam", lr=2e-3, momentum=0.0,
                             weight_decay=0.0, schedule="cosine", augment="none"),
    "adam_lr1e-3": TrainConfig(epochs=10, batch_size=128, optimizer="adam", lr=1e-3, momentum=0.0,
                               weight_decay=0.0, schedule="constant", augment="none"),
    "adam_lr1e-4": TrainConfig(epochs=10, batch_size=128, optimizer="adam", lr=1e-4, momentum=0.0,
                               weight_decay=0.0, schedule="constant", augment="none"),
    "finetune_sgd_cosine": TrainConfig(epochs=10, batch_size=128, optimizer="sgd", lr=1e-2, momentum=0.9,
                                       nesterov=True, weight_decay=0.0, schedule="cosine", augment="auto"),
}
"""Named training presets. ``shrinkbench`` is ShrinkBench's finetuning default; ``adam_lr1e-3`` and
``adam_lr1e-4`` are the two baseline recipes of ShrinkBench's baseline confounder experiment."""


class Callback:
    """Hooks into :func:`fit`. Override what you need; every method is optional.

    ``loss`` may replace the task loss (distillation); ``after_step`` runs after every optimizer step
    (pruning masks re-zero weights there); ``epoch_end`` may add columns to the history row.
    """

    def fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first epoch."""

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Called before each epoch (1-based)."""

    def loss(self, model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
             task_loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer a config names, over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at a global step (0-based): warm-up, then the schedule."""
    epoch_float = step / steps_per_epoch
    if cfg.warmup_epochs and epoch_float < cfg.warmup_epochs:
        return (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return cfg.gamma ** sum(1 for m in cfg.milestones if epoch_float >= m)
    total = (cfg.epochs - cfg.warmup_epochs) * steps_per_epoch
    progress = (step - cfg.warmup_epochs * steps_per_epoch) / max(total, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, normalize: Normalizer, batch_size: int = 512,
             device: str | torch.device | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 over a whole split, exact: correct predictions summed over the true count.

    Example:
        >>> from shrinkviz.data import load_dataset, Normalizer
        >>> from shrinkviz.models import create_model
        >>> ds = load_dataset("digits")
        >>> m = create_model("tiny_mlp", dataset=ds)
        >>> 0 <= evaluate(m, ds.test, Normalizer(ds.mean, ds.std))["top1"] <= 1
        True
    """
    device = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    top1 = top5 = 0
    for x, y in batches(split, batch_size, normalize, device):
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
        top1 += count_correct(logits, y, 1)
        top5 += count_correct(logits, y, 5)
    model.train(was_training)
    n = len(split)
    return {"loss": float(loss_sum) / n, "top1": top1 / n, "top5": top5 / n, "n": n}


def count_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> int:
    """How many targets are among the top-``k`` logits (k capped at the class count)."""
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).sum())


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def fit(model: nn.Module, data: Dataset, cfg: TrainConfig, *, callbacks: Sequence[Callback] = (),
        seed: int = 0, device: str | torch.device | None = None, stage: str = "train",
        progress: bool = True) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` after every epoch.

    Args:
        model: any ``nn.Module`` mapping normalised images to logits.
        data: the dataset (its normalisation statistics are used).
        cfg: hyperparameters.
        callbacks: hooks for masks, QAT, distillation (see :class:`Callback`).
        seed: seeds shuffling, augmentation and any randomness in the model's forward.
        device: where to train (default: CUDA when present, else CPU).
        stage: label written in each history row.
        progress: show a tqdm progress bar.

    Returns:
        One dict per epoch: stage, epoch, lr, train_loss, task_loss, kd_loss, train_top1, val_loss,
        val_top1, val_top5, epoch_s (and whatever callbacks add).
    """
    from shrinkviz.prune.masks import mask_callbacks  # lazy (prune imports train); keeps pruned zeros at zero

    callbacks = [*mask_callbacks(model, callbacks), *callbacks]
    device = resolve_device(device)
    model.to(device)
    normalize = Normalizer(data.mean, data.std)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    augment = data.augment if cfg.augment == "auto" else cfg.augment
    for cb in callbacks:
        cb.fit_start(model, optimizer)
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    step = 0
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc=stage, disable=not progress, leave=False)
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        for cb in callbacks:
            cb.epoch_start(model, epoch)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for x, y in batches(data.train, cfg.batch_size, normalize, device, generator, augment):
            factor = lr_factor(cfg, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor
            logits = model(x)
            task_loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            loss, extra = task_loss, {}
            for cb in callbacks:
                replaced = cb.loss(model, x, logits, y, loss)
                if replaced is not None:
                    loss, more = replaced
                    extra.update(more)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for cb in callbacks:
                cb.after_backward(model)
            optimizer.step()
            for cb in callbacks:
                cb.after_step(model)
            n = y.shape[0]
            for key, value in (("train_loss", loss), ("task_loss", task_loss), *extra.items()):
                sums[key] = sums.get(key, 0.0) + value.detach() * n
            correct += (logits.detach().argmax(1) == y).sum()
            step += 1
            bar.update(1)
        n_train = len(data.train)
        val = evaluate(model, data.val, normalize, device=device)
        row: dict[str, Any] = {
            "stage": stage, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(sums["train_loss"]) / n_train, "task_loss": float(sums["task_loss"]) / n_train,
            "kd_loss": float(sums["kd_loss"]) / n_train if "kd_loss" in sums else float("nan"),
            "train_top1": int(correct) / n_train,
            "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
        }
        for cb in callbacks:
            cb.epoch_end(model, epoch, row)
        row["epoch_s"] = time.perf_counter() - started
        history.append(row)
        bar.set_postfix(val_top1=f"{val['top1']:.3f}")
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {row['train_loss']}); "
                                     f"lower TrainConfig.lr (now {cfg.lr})")
        if cfg.select == "best_val" and (best is None or val["top1"] > best[0]):
            best = (val["top1"], copy.deepcopy(model.state_dict()))
    bar.close()
    if best is not None:
        model.load_state_dict(best[1])
    for cb in callbacks:
        cb.fit_end(model)
    return history
