"""Every hyperparameter of one training stage (:class:`TrainConfig`) and the one table of named presets
(:data:`PRESETS`) that every verb and experiment takes its defaults from (:data:`DEFAULTS`).

Example:
    >>> TrainConfig.resolve("shrinkbench").lr
    0.001
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from shrinkviz.core.registry import unknown_name
from shrinkviz.data import AUGMENTATIONS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
SELECTIONS = ("last", "best_val", "shrinkbench_best_test")
PRECISIONS = ("fp32", "bf16")
BF16_QAT = "cannot train INT8 QAT (its fake quantization expects float32 activations)"
"""Why ``precision="bf16"`` is refused with QAT (one reason, wherever it is refused)."""


def precision_label(name: str, precision: str) -> str:
    """A preset or recipe name as the results columns show it: ``name``, with ``+bf16`` for bfloat16.

    Example:
        >>> precision_label("shrinkbench", "fp32"), precision_label("shrinkbench", "bf16")
        ('shrinkbench', 'shrinkbench+bf16')
    """
    return name if precision == "fp32" else f"{name}+{precision}"


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
            validation top-1 (the test split is never used for selection). ``shrinkbench_best_test`` is
            ShrinkBench's reporting rule, offered only to reproduce its figures: it restores the weights
            with the best *test* top-1 among the starting weights and every epoch's (ShrinkBench reports
            the maximum of its per-epoch test accuracies, the evaluation before finetuning included).
            That is model selection on the test set, so its top-1 is optimistic, by about the spread of
            the epochs' test accuracies; never use it to compare methods of your own.
        precision: ``fp32`` (default) trains in float32 throughout. ``bf16`` runs the forward pass of
            training steps under ``torch.autocast`` with bfloat16 (convolutions and matrix products in
            bfloat16, the weights, gradients, optimizer state and loss in float32): a MnistNet epoch in
            ~0.65x the time on a CPU with native bfloat16 (AVX512_BF16 or AMX; ``benchmarks/bench_fit.py``,
            AMD EPYC Zen 4), also fast on recent GPUs; different numbers
            from ``fp32`` (not a reassociation of the same sums: the products are rounded to 8 bits of
            mantissa), still deterministic per seed. Evaluation, and so every reported accuracy, is always
            float32. Not for INT8 QAT, whose fake quantization assumes float32 activations. Written into
            :meth:`to_dict` only when not ``fp32``, so configs saved before it keep their identity.
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
    precision: str = "fp32"

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
        if self.precision not in PRECISIONS:
            raise bad("precision", f"valid: {', '.join(PRECISIONS)}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise bad("nesterov", "needs optimizer='sgd' with momentum > 0")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists; ``precision`` only when not ``fp32``)."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if k not in _WHEN_SET or v != _WHEN_SET[k]
        }

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
            raise unknown_name("training preset", name, sorted(PRESETS))
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
        raise TypeError(
            f"{field}={cfg!r}: give a TrainConfig or a preset name ({', '.join(sorted(PRESETS))})"
        )

    @classmethod
    def shrinkbench(cls) -> TrainConfig:
        """ShrinkBench's default finetuning: SGD lr 1e-3, momentum 0.9, Nesterov, no weight decay, no
        schedule, 30 epochs, batch 128."""
        return PRESETS["shrinkbench"]


_WHEN_SET = {"precision": "fp32"}
"""Fields added after configs were saved (in baseline checkpoint keys, run ids): :meth:`TrainConfig.to_dict`
writes them only when they differ from these defaults."""


def _sgd(
    epochs: int, lr: float, schedule: str, *, nesterov: bool = True, weight_decay: float = 0.0
) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, optimizer="sgd", lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=weight_decay,
        schedule=schedule, augment="auto",
    )  # fmt: skip


def _adam(epochs: int, lr: float, schedule: str, augment: str = "none") -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        optimizer="adam",
        lr=lr,
        momentum=0.0,
        weight_decay=0.0,
        schedule=schedule,
        augment=augment,
    )


PRESETS: dict[str, TrainConfig] = {
    "shrinkbench": _sgd(30, 1e-3, "constant"),
    "shrinkbench_exact": _sgd(30, 1e-3, "constant").replace(select="shrinkbench_best_test"),
    "shrinkbench_adam": _adam(30, 1e-4, "constant", augment="auto"),
    "cifar_sgd": _sgd(200, 0.1, "cosine", nesterov=False, weight_decay=5e-4),
    "adam_fast": _adam(10, 2e-3, "cosine"),
    "adam_lr1e-3": _adam(10, 1e-3, "constant"),
    "adam_lr1e-4": _adam(10, 1e-4, "constant"),
    "qat": _sgd(3, 1e-3, "cosine"),
    "finetune_sgd_cosine": _sgd(10, 1e-2, "cosine"),
    "sgd_lr1e-2": _sgd(5, 1e-2, "constant"),
}
"""Named training presets. ``shrinkbench`` is ShrinkBench's finetuning default; ``shrinkbench_exact`` the
same recipe with ShrinkBench's reporting rule (``select="shrinkbench_best_test"``: the best test top-1 of
the epochs and the starting point, optimistic; see ``docs/shrinkbench_parity.md`` for the data split and
pruning options that complete ShrinkBench's protocol); ``adam_lr1e-3`` and
``adam_lr1e-4`` are the two baseline recipes of ShrinkBench's baseline confounder experiment;
``sgd_lr1e-2`` (SGD lr 1e-2, Nesterov, constant, 5 epochs) the baseline of the ShrinkBench parity protocol
(``benchmarks/bench_sweep_parity.py``)."""


DEFAULTS: dict[str, str] = {
    "finetune": "shrinkbench",
    "prune": "shrinkbench",
    "iterative_prune": "shrinkbench",
    "prune_channels": "shrinkbench",
    "experiment": "shrinkbench",
    "quantize": "qat",
    "distill": "finetune_sgd_cosine",
    "pipeline": "finetune_sgd_cosine",
}
"""The training preset each entry point uses when no ``cfg`` is given, in one table. Finetuning after
pruning (and an :class:`~shrinkviz.experiments.experiment.Experiment`'s stages) follows ShrinkBench's
default; QAT starts from a trained model and finetunes gently (``qat``: SGD lr 1e-3, Nesterov, cosine);
distillation and the ordered pipeline train each stage with a cosine schedule from lr 1e-2
(``finetune_sgd_cosine``), as their stages run many more epochs than a ShrinkBench finetune."""


def default_config(verb: str) -> TrainConfig:
    """The training config ``verb`` uses without ``cfg`` (see :data:`DEFAULTS`).

    Example:
        >>> default_config("quantize").lr, default_config("finetune") == TrainConfig.shrinkbench()
        (0.001, True)
    """
    if verb not in DEFAULTS:
        raise unknown_name("verb", verb, sorted(DEFAULTS))
    return PRESETS[DEFAULTS[verb]]


def resolve_config(cfg: TrainConfig | str | None, verb: str, field: str = "cfg") -> TrainConfig:
    """``cfg`` as a TrainConfig: itself, a preset name, or (None) the verb's default from :data:`DEFAULTS`.

    Example:
        >>> resolve_config(None, "distill") == TrainConfig.preset("finetune_sgd_cosine")
        True
    """
    return default_config(verb) if cfg is None else TrainConfig.resolve(cfg, field)
