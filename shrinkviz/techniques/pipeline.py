"""Ordered compression pipelines: Prune (P), Quantize (Q, INT8 QAT) and Distill (D) in any order, with a
fixed epoch allocation, ending in one deployable artefact (Zhou & Shen's Prune-Quantize-Distill).

What each stage does, wherever it stands (every stage trains with THE loop, ``shrinkviz.loop.train.fit``,
with the same finetuning config except for its epoch count; history rows carry the stage label):

* **P**: one-shot prune of the *current* model to ``compression`` (``shrinkviz.techniques.prune.prune``, exact
  whole-model ratio), then finetune for the stage's epochs with the masks kept (``fit`` re-zeroes masked
  weights after every step). After Q, it prunes the fake-quant model: magnitudes are those of the QAT
  weights and the masks sit on the fused QAT modules; they hold through conversion (int8 weights are
  symmetric, so 0 stays 0; BN folding scales a zero to zero; checked at conversion).
* **Q**: insert fake quantization (``shrinkviz.techniques.quant.prepare_qat_graph``: graph-mode conv-bn-relu
  fusion, x86 INT8 QAT),
  carrying any masks, and train for the stage's epochs. The model stays fake-quant for the rest of the
  pipeline, so later stages (P, D) train with quantization in the loop; conversion to real INT8 kernels
  happens once, at the very end. Q before P means the observers first see the unpruned weights and
  activations; their moving averages then adapt to the pruned model during P's epochs.
* **D**: train the current student (float, pruned and/or fake-quant) with Hinton distillation from the
  teacher for the stage's epochs (:class:`shrinkviz.techniques.distill.DistillCallback`). The teacher defaults to
  the uncompressed input model (the pretrained baseline), frozen. D does not change the deployment form.
* **F**: plain finetuning of the current model for the stage's epochs (cross-entropy only, masks and fake
  quantization kept): the control for D. ``PQF`` with the epochs of ``PQD`` separates what distillation adds
  from what the extra training epochs add.

The artefact is INT8 (converted) when Q is in the order, else FP32; it is sparse when P is. The single
techniques ("P", "Q", "D") are the baselines, run with the same total epoch budget.

Example:
    >>> import shrinkviz as sv
    >>> ds = sv.load_dataset("digits").subset(train=128, val=32, test=32)
    >>> model = sv.create_model("tiny_cnn", dataset=ds, seed=0)
    >>> res = pipeline(model, ds, "PQD", epochs=(1, 1, 1), compression=2.0, progress=False)
    >>> res.quantized, [row["stage"] for row in res.history]
    (True, ['P', 'Q', 'D'])
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkviz.core.verbs import make_module_callable
from shrinkviz.data import Dataset, Normalizer, as_dataset
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import check_masks, get_masks
from shrinkviz.loop.train import evaluate, fit
from shrinkviz.techniques.distill import ALPHA, TEMPERATURE, DistillCallback, check_compatible, freeze
from shrinkviz.techniques.quant import convert_graph, int8_weights, is_int8, is_qat, prepare_qat_graph
from shrinkviz.techniques.result import Result, as_model

STAGES = ("P", "Q", "D", "F")
ORDERS = tuple("".join(p) for p in itertools.permutations(STAGES[:3]))
"""The six orders of P, Q and D (F, plain finetuning, is their control)."""
DEFAULT_EPOCHS = (20, 40, 40)
"""The paper's allocation for three stages (a 100-epoch budget)."""


def parse_order(order: str) -> tuple[str, ...]:
    """Validate an order string: stages from {P, Q, D, F}, each at most once.

    Example:
        >>> parse_order("pqd")
        ('P', 'Q', 'D')
    """
    if not isinstance(order, str) or not order:
        raise ValueError(f"order={order!r}: give a non-empty string of stages from P, Q, D, F, e.g. 'PQD'")
    stages = tuple(order.upper())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(
            f"order={order!r}: unknown stage(s) {', '.join(unknown)}; stages are P (prune), "
            "Q (INT8 QAT), D (distill), F (plain finetune)"
        )
    repeated = sorted({s for s in stages if stages.count(s) > 1})
    if repeated:
        raise ValueError(
            f"order={order!r}: stage(s) {', '.join(repeated)} repeated; each stage runs at most once"
        )
    return stages


def _final_form_start(stages: Sequence[str]) -> int:
    """Index of the stage that completes compression (the later of P and Q; 0 when neither is there)."""
    compressing = [i for i, stage in enumerate(stages) if stage in "PQ"]
    return compressing[-1] if compressing else 0


def final_form_epochs(order: str, epochs: Sequence[int]) -> int:
    """Epochs the deployed form trains for: those of the stage that completes compression (the later of P
    and Q) and of every stage after it. Zhou & Shen's 20/40/40 by position gives PQD and QPD 80 of 100 such
    epochs and the other orders 40, which is why an ordering ablation needs :func:`equal_final_epochs`.

    Example:
        >>> final_form_epochs("PQD", (2, 4, 4)), final_form_epochs("DPQ", (2, 4, 4))
        (8, 4)
    """
    return int(sum(tuple(epochs)[_final_form_start(parse_order(order)) :]))


def equal_final_epochs(order: str, total: int, final: int) -> tuple[int, ...]:
    """An allocation of ``total`` epochs giving the deployed form exactly ``final`` of them, whatever the order.

    The stages from the one that completes compression (the later of P and Q) onward share ``final``; the
    stages before it share ``total - final``; each share is split as evenly as whole epochs allow, any
    remainder going to the earlier stages. Every order then trains its final sparse INT8 model equally long,
    so a difference between orders is an effect of the order, not of the budget.

    Raises:
        ValueError: a share too small to give each of its stages one epoch.

    Example:
        >>> [equal_final_epochs(o, 10, 6) for o in ("PQD", "QPD", "PDQ", "DQP")]
        [(4, 3, 3), (4, 3, 3), (2, 2, 6), (2, 2, 6)]
    """
    stages = parse_order(order)
    first = _final_form_start(stages)
    before, after = len(stages[:first]), len(stages[first:])
    if not (isinstance(total, int) and isinstance(final, int)) or final < after or total - final < before:
        raise ValueError(
            f"equal_final_epochs({order!r}, total={total}, final={final}): {before} stage(s) before the "
            f"final form need >= {before} epochs and {after} from it need >= {after}"
        )

    def split(n: int, k: int) -> list[int]:
        return [n // k + (1 if i < n % k else 0) for i in range(k)] if k else []

    if before == 0 and total != final:
        raise ValueError(
            f"equal_final_epochs({order!r}): every stage trains the final form; total must equal final"
        )
    return tuple(split(total - final, before) + split(final, after))


def allocate_epochs(
    order: str, epochs: int | Sequence[int] | None = None, *, budget: int | None = None, scale: float = 1.0
) -> tuple[int, ...]:
    """Epochs per stage, validated against the order and an optional total budget, then scaled.

    Args:
        order: the stage order.
        epochs: one count per stage; an int for a single-stage order; None = (20, 40, 40) for three
            stages, or the same 100-epoch budget for a single stage.
        budget: when given, the counts must sum to it (before scaling).
        scale: multiplies every count (rounded, at least 1), e.g. 0.05 turns (20, 40, 40) into (1, 2, 2).

    Raises:
        ValueError: naming the field (``epochs``, ``epochs[i]``, ``budget``, ``scale``).

    Example:
        >>> allocate_epochs("PQD"), allocate_epochs("P"), allocate_epochs("PQD", scale=0.05)
        ((20, 40, 40), (100,), (1, 2, 2))
    """
    stages = parse_order(order)
    if epochs is None:
        if len(stages) == 3:
            epochs = DEFAULT_EPOCHS
        elif len(stages) == 1:
            epochs = (sum(DEFAULT_EPOCHS),)
        else:
            raise ValueError(
                f"epochs=None: give one epoch count per stage for the {len(stages)}-stage order {order!r}"
            )
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        if len(stages) != 1:
            raise ValueError(
                f"epochs={epochs}: an int is allowed only for a single-stage order; give one count "
                f"per stage of {order!r}, e.g. {DEFAULT_EPOCHS}"
            )
        epochs = (epochs,)
    counts = tuple(epochs)
    if len(counts) != len(stages):
        raise ValueError(
            f"epochs={counts}: {len(counts)} counts for the {len(stages)} stages of order {order!r}"
        )
    for i, n in enumerate(counts):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"epochs[{i}]={n!r} (stage {stages[i]}): must be a whole number >= 1")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ValueError(f"budget={budget!r}: must be a whole number >= 1")
        if sum(counts) != budget:
            raise ValueError(f"epochs={counts} sum to {sum(counts)}, not the budget={budget}")
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r}: must be a finite number > 0")
    return tuple(max(1, round(n * scale)) for n in counts)


@dataclass
class PipelineResult(Result):
    """What :func:`pipeline` returns: a :class:`Result` with the record of each stage.

    Attributes:
        model: the deployable artefact (converted INT8 when Q ran, else FP32), CPU, eval mode.
        history: ``fit`` rows of every stage in order (``stage`` is P / Q / D, ``position`` 1-based).
        stages: one dict per stage: stage, position, epochs, form (fp32 / fake-quant), sparsity, val_top1,
            seconds.
        order: the order run.
        epochs: epochs per stage as run.
        metrics: the artefact's val_top1 / test_top1 / test_top5 (measured on the artefact itself,
            after conversion) and its weight sparsity.
        masks: the pruning masks at the end of the last stage (``{"<layer>.weight": bool}``, True = kept;
            empty without P); an INT8 artefact holds exact zeros where they are False.
    """

    stages: list[dict[str, Any]] = field(default_factory=list)
    order: str = ""
    epochs: tuple[int, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        """Whether the artefact is an INT8 model."""
        return is_int8(self.model)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all Conv2d / Linear layers except the classifier (float, QAT or INT8).

    Example:
        >>> from shrinkviz.models import create_model
        >>> weight_sparsity(create_model("tiny_mlp"))
        0.0
    """
    from shrinkviz.core.layers import layer_weight, named_layers
    from shrinkviz.loop.masks import classifier_layers

    skip = classifier_layers(model)
    zeros = total = 0
    if is_int8(model):
        for name, w in int8_weights(model).items():
            if name not in skip:
                zeros, total = zeros + int((w == 0).sum()), total + w.numel()
        return zeros / total if total else 0.0
    for name, module, _ in named_layers(model):
        if name not in skip:
            w = layer_weight(module)
            zeros, total = zeros + int((w == 0).sum()), total + w.numel()
    return zeros / total if total else 0.0


def pipeline(
    model: nn.Module | Result,
    data: Dataset | str,
    order: str = "PQD",
    epochs: int | Sequence[int] | None = None,
    *,
    cfg: TrainConfig | str | None = None,
    budget: int | None = None,
    scale: float = 1.0,
    strategy: str = "global_weight",
    compression: float = 8.0,
    teacher: nn.Module | None = None,
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    finetune: TrainConfig | str | None = None,
) -> PipelineResult:
    """Run the stages of ``order`` on a copy of ``model`` and return the deployable artefact.

    Args:
        model: the uncompressed (pretrained) float model; not modified.
        data: Dataset or dataset name.
        order: stages from P, Q, D, F, each at most once (``"PQD"``, ``"QPD"``, ..., ``"P"``; ``"PQF"``
            is PQD's control, plain finetuning in D's place).
        epochs: per-stage epochs (see :func:`allocate_epochs`; default 20/40/40).
        budget: total epochs the allocation must add up to (checked before ``scale``).
        scale: shrink every stage's epochs (smoke runs), e.g. 0.05 -> (1, 2, 2).
        strategy, compression: pruning strategy and target compression ratio of P.
        teacher: teacher of D; default the uncompressed input ``model`` (frozen copy).
        cfg: training config (its ``epochs`` is replaced per stage) or preset name (default
            ``DEFAULTS["pipeline"]``, ``finetune_sgd_cosine``).
        temperature, alpha: distillation temperature and KD weight of D.
        seed: seed of pruning and training.
        device: training device (conversion and the final evaluation run on the CPU).
        progress: progress bars.
        finetune: the 0.1 name of ``cfg``, still accepted.

    Raises:
        ValueError: bad order / epochs / budget / scale / compression (naming the field), or a
            teacher that does not match the student.
        TypeError: ``cfg`` is neither a TrainConfig nor a preset name, or both ``cfg`` and ``finetune``.

    Example:
        >>> allocate_epochs("QDP", (20, 40, 40), budget=100)
        (20, 40, 40)
    """
    from shrinkviz.techniques.prune import apply_pruning

    if finetune is not None and cfg is not None:
        raise TypeError("pipeline: give cfg= only (finetune= is its old name)")
    model = as_model(model)
    check_masks(model, "pipeline")
    stages = parse_order(order)
    counts = allocate_epochs(order, epochs, budget=budget, scale=scale)
    base_cfg = resolve_config(
        cfg if finetune is None else finetune, "pipeline", "cfg" if finetune is None else "finetune"
    )
    data = as_dataset(data)
    if is_qat(model) or is_int8(model):
        raise ValueError("pipeline() starts from a float model; quantization is its Q stage")
    current = copy.deepcopy(model)
    if "D" in stages:
        teacher = freeze(copy.deepcopy(model if teacher is None else teacher))
        check_compatible(current, teacher, data.input_shape, data.num_classes)
    history: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    for position, (stage, n) in enumerate(zip(stages, counts, strict=True), start=1):
        started = time.perf_counter()
        cfg = base_cfg.replace(epochs=n, warmup_epochs=min(base_cfg.warmup_epochs, n))
        callbacks: list[Any] = []
        if stage == "P":
            current = apply_pruning(current, strategy, compression, data=data, seed=seed, inplace=True)
        elif stage == "Q":
            current = prepare_qat_graph(current, torch.randn(2, *data.input_shape))
        elif stage == "D":
            callbacks.append(DistillCallback(teacher, temperature, alpha))
        rows = fit(
            current, data, cfg, callbacks=callbacks, seed=seed, device=device, stage=stage, progress=progress
        )
        for row in rows:
            row["position"] = position
        history.extend(rows)
        infos.append(
            {
                "stage": stage,
                "position": position,
                "epochs": n,
                "form": "fake-quant" if is_qat(current) else "fp32",
                "sparsity": weight_sparsity(current),
                "val_top1": rows[-1]["val_top1"],
                "seconds": time.perf_counter() - started,
            }
        )
    masks = {name: mask.cpu() for name, mask in get_masks(current).items()}
    artefact = convert_graph(current) if "Q" in stages else current.cpu().eval()
    normalize = Normalizer(data.mean, data.std)
    val, test = evaluate(artefact, data.val, normalize), evaluate(artefact, data.test, normalize)
    metrics = {
        "val_top1": val["top1"],
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "sparsity": weight_sparsity(artefact),
    }
    return PipelineResult(artefact.eval(), history, infos, "".join(stages), counts, metrics, masks)


make_module_callable(__name__, pipeline)  # sv.pipeline(model, ...) runs the verb; see shrinkviz.core.verbs
