"""Pruning schedules beyond one shot: iterative (prune, finetune, repeat) and gradual (Zhu & Gupta 2017).

Both reuse the one-shot machinery (strategies, exact keep counts, masks) and the one training loop.

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.models import create_model
    >>> from shrinkviz.loop.train import TrainConfig
    >>> ds = load_dataset("digits").subset(train=128, val=32, test=32)
    >>> cfg = TrainConfig.preset("adam_fast").replace(epochs=1)
    >>> model, history = iterative_prune(create_model("tiny_mlp", dataset=ds), ds, strategy="global_weight",
    ...                                  compression=4, rounds=2, cfg=cfg, progress=False)
    >>> [round(row["compression"], 2) for row in history]
    [2.0, 4.0]
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any

import torch
from torch import nn

from shrinkviz.data import Dataset, as_dataset
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import MaskCallback, prunable_parameters, set_masks
from shrinkviz.loop.train import fit
from shrinkviz.techniques.prune.oneshot import apply_pruning, check_compression, keep_budget, select_masks
from shrinkviz.techniques.prune.strategies import ScoreContext, get_strategy
from shrinkviz.techniques.result import Result, as_model

UNITS = ("epoch", "step")


def iterative_prune(
    model: nn.Module | Result,
    data: Dataset | str,
    strategy: str = "global_weight",
    compression: float = 8.0,
    *,
    cfg: TrainConfig | str | None = None,
    rounds: int = 3,
    seed: int = 0,
    include_classifier: bool = False,
    prune_bias: bool = False,
    inplace: bool = False,
    progress: bool = True,
    finetune: TrainConfig | str | None = None,
) -> Result:
    """``rounds`` rounds of prune + finetune with geometric compression steps ``compression ** (i / rounds)``.

    Args:
        model: the model to prune (a deep copy is pruned unless ``inplace``).
        data: Dataset or dataset name (finetuning, and scoring for data-driven strategies).
        strategy: any name of :func:`available_strategies`.
        compression: final whole-model compression ratio (exact after the last round).
        rounds: number of prune + finetune rounds (>= 1).
        cfg: TrainConfig or preset name used after every round (default: ShrinkBench's finetuning).
        seed: pruning and training seed.
        include_classifier, prune_bias: as in :func:`shrinkviz.techniques.prune.prune`.
        inplace: prune ``model`` itself.
        progress: show progress bars.
        finetune: the 0.1 name of ``cfg``, still accepted.

    Returns:
        A :class:`Result`: the pruned model and the history rows of all rounds, with extra keys ``round``
        and ``compression``.
    """
    model = as_model(model)
    get_strategy(strategy)
    compression = check_compression(compression)
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds={rounds!r}: must be a whole number >= 1")
    if finetune is not None and cfg is not None:
        raise TypeError("iterative_prune: give cfg= only (finetune= is its old name)")
    cfg = resolve_config(
        cfg if finetune is None else finetune, "iterative_prune", "cfg" if finetune is None else "finetune"
    )
    if data is None:
        raise ValueError("iterative_prune needs data=<Dataset or dataset name> to finetune")
    data = as_dataset(data)
    targets = prunable_parameters(model, include_classifier=include_classifier, prune_bias=prune_bias)
    if not targets:
        raise ValueError(f"{type(model).__name__} has no prunable layer; nothing to prune")
    keep_budget(model, targets, compression)  # the final target is feasible (then every earlier one is)
    work = model if inplace else copy.deepcopy(model)
    history: list[dict[str, Any]] = []
    for i in range(1, rounds + 1):
        step = compression ** (i / rounds)
        apply_pruning(
            work,
            strategy,
            step,
            data=data,
            seed=seed,
            include_classifier=include_classifier,
            prune_bias=prune_bias,
            inplace=True,
        )
        rows = fit(work, data, cfg, seed=seed + i - 1, stage=f"prune_round{i}", progress=progress)
        history += [{**row, "round": i, "compression": step} for row in rows]
    return Result(work, history)


def polynomial_sparsity(t: float, begin: float, end: float, initial: float, final: float) -> float:
    """Zhu & Gupta (2017): ``final + (initial - final) * (1 - (t - begin) / (end - begin)) ** 3``, clamped.

    Example:
        >>> round(polynomial_sparsity(5, 0, 10, 0.0, 0.8), 6)
        0.7
    """
    progress = 1.0 if end <= begin else min(max((t - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruning(MaskCallback):
    """Gradual magnitude (or any strategy) pruning during training with Zhu & Gupta's cubic schedule.

    Sparsity of the prunable weights rises from ``initial_sparsity`` to the sparsity that gives the target
    whole-model ``compression`` at ``fit_start``, updating masks at ``begin``, every ``frequency`` units,
    and at ``end``; the update at ``end`` recomputes the keep count from the trained state so the
    whole-model ratio is exact (BatchNorm and biases change during training). Masks only grow (pruned
    weights never come back) and are enforced like every mask (this callback is a
    :class:`MaskCallback`). ``fit_end`` applies the final target once more (after an early stop before
    ``end``, or a best-val restoration of an earlier epoch), so the trained model meets it exactly.

    Args:
        strategy: any name of :func:`available_strategies`.
        compression: final whole-model compression ratio.
        end: epoch (1-based, mask update at its start) or step count at which the target is reached.
        begin: first update (default: epoch 1, or step 0).
        frequency: update every this many epochs / steps.
        unit: ``"epoch"`` or ``"step"``.
        initial_sparsity: sparsity of the first update, in [0, 1).
        data: Dataset or name for data-driven strategies.
        seed, include_classifier, prune_bias: as in :func:`shrinkviz.techniques.prune.prune`.

    Example:
        >>> from shrinkviz.data import load_dataset
        >>> from shrinkviz.models import create_model
        >>> from shrinkviz.loop.train import TrainConfig, fit
        >>> ds = load_dataset("digits").subset(train=128, val=32, test=32)
        >>> model = create_model("tiny_mlp", dataset=ds)
        >>> rows = fit(model, ds, TrainConfig.preset("adam_fast").replace(epochs=3),
        ...            callbacks=[GradualPruning("global_weight", 4, end=3)], progress=False)
        >>> [round(r["sparsity"], 2) for r in rows]
        [0.0, 0.77, 0.88]
    """

    def __init__(
        self,
        strategy: str = "global_weight",
        compression: float = 8.0,
        *,
        end: int,
        begin: int | None = None,
        frequency: int = 1,
        unit: str = "epoch",
        initial_sparsity: float = 0.0,
        data: Dataset | str | None = None,
        seed: int = 0,
        include_classifier: bool = False,
        prune_bias: bool = False,
    ) -> None:
        super().__init__()
        self.spec = get_strategy(strategy)
        self.compression = check_compression(compression)
        if unit not in UNITS:
            raise ValueError(f"unit={unit!r}; valid: {', '.join(UNITS)}")
        begin = (1 if unit == "epoch" else 0) if begin is None else begin
        for field_name, value, low in (("begin", begin, 0), ("end", end, begin), ("frequency", frequency, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"GradualPruning.{field_name}={value!r}: must be a whole number >= {low}")
        if not (isinstance(initial_sparsity, numbers.Real) and 0 <= initial_sparsity < 1):
            raise ValueError(f"initial_sparsity={initial_sparsity!r}: must be in [0, 1)")
        if self.spec.needs_data and data is None:
            raise ValueError(f"strategy {strategy!r} needs data=<Dataset or dataset name>")
        self.begin, self.end, self.frequency, self.unit = begin, end, frequency, unit
        self.initial_sparsity = float(initial_sparsity)
        self.data = as_dataset(data, optional=True)
        self.seed, self.include_classifier, self.prune_bias = seed, include_classifier, prune_bias
        self._final_keep = 0
        self._done: set[int] = set()
        self._steps = 0

    def sparsity_at(self, t: int) -> float:
        """Target sparsity of the prunable weights at time ``t`` (after :meth:`fit_start`)."""
        return polynomial_sparsity(t, self.begin, self.end, self.initial_sparsity, self._final_sparsity)

    def _targets(self, model: nn.Module) -> list:
        return prunable_parameters(
            model, include_classifier=self.include_classifier, prune_bias=self.prune_bias
        )

    def fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        targets = self._targets(model)
        if not targets:
            raise ValueError(f"{type(model).__name__} has no prunable layer; nothing to prune")
        self._final_keep = keep_budget(model, targets, self.compression)
        self._size = sum(module._parameters[attr].numel() for _, module, attr in targets)
        self._final_sparsity = 1.0 - self._final_keep / self._size
        self._done, self._steps = set(), 0
        super().fit_start(model, optimizer)
        if self.unit == "step":
            self._maybe_update(model, 0)

    def _maybe_update(self, model: nn.Module, t: int, force: bool = False) -> None:
        due = self.begin <= t <= self.end and ((t - self.begin) % self.frequency == 0 or t == self.end)
        if not (due or force) or t in self._done:
            return
        self._done.add(t)
        targets = self._targets(model)
        alive = sum(int((module._parameters[attr] != 0).sum()) for _, module, attr in targets)
        if force or t >= self.end:  # exact target from the current state (BatchNorm etc. have trained)
            keep = keep_budget(model, targets, self.compression, clamp=True)
        else:
            keep = math.floor((1.0 - self.sparsity_at(t)) * self._size + 0.5)
            keep = min(max(keep, self._final_keep), alive)
        ctx = ScoreContext(model, self.data, self.seed, self.spec.name)
        set_masks(model, select_masks(model, self.spec, targets, keep, ctx))
        self.refresh(model)

    def epoch_start(self, model: nn.Module, epoch: int) -> None:
        if self.unit == "epoch":
            self._maybe_update(model, epoch)
        super().epoch_start(model, epoch)

    def after_step(self, model: nn.Module) -> None:
        super().after_step(model)
        if self.unit == "step":
            self._steps += 1
            self._maybe_update(model, self._steps)

    def fit_end(self, model: nn.Module) -> None:
        # also after best-val restoration or an early stop: the returned model meets the target exactly
        self._done.discard(self.end)
        self._maybe_update(model, self.end, force=True)
