"""THE training and evaluation loop of shrinkviz. Pruning masks, QAT and distillation plug into it
through callbacks; nobody writes a second loop.

Hyperparameters live in one frozen dataclass, :class:`TrainConfig`, with named presets (ShrinkBench's
finetuning default among them) so that finetuning can be held fixed or varied as a controlled factor.

Example:
    >>> from shrinkviz.data import load_dataset
    >>> from shrinkviz.models import create_model
    >>> ds = load_dataset("digits").subset(train=256, val=64, test=64)
    >>> model = create_model("tiny_mlp", dataset=ds)
    >>> history = fit(model, ds, TrainConfig.preset("adam_fast").replace(epochs=3), progress=False)
    >>> [(row["stage"], row["epoch"]) for row in history]
    [('train', 1), ('train', 2), ('train', 3)]
    >>> history[-1]["train_loss"] < history[0]["train_loss"]
    True
    >>> history[-1]["val_top1"] == evaluate(model, ds.val, Normalizer(ds.mean, ds.std))["top1"]
    True
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkviz.core.device import model_device, resolve_device
from shrinkviz.core.heap import steady_heap
from shrinkviz.core.machine import cpu_isa
from shrinkviz.core.progress import progress_bar
from shrinkviz.data import Dataset, Normalizer, Split, batches
from shrinkviz.loop import optim
from shrinkviz.loop.callbacks import Callback
from shrinkviz.loop.config import BF16_QAT, PRECISIONS, PRESETS, TrainConfig
from shrinkviz.loop.masks import mask_callbacks
from shrinkviz.loop.validated import recall, remember

__all__ = [
    "PRECISIONS",
    "PRESETS",
    "Callback",
    "TrainConfig",
    "check_precision",
    "count_correct",
    "evaluate",
    "fit",
    "lr_factor",
    "make_optimizer",
    "training_precision",
]

NATIVE_BF16_ISA = ("avx512_bf16", "amx_bf16")
"""CPU flags with which ``precision="bf16"`` runs native bfloat16 kernels (without them oneDNN converts,
and bf16 is not faster than float32)."""


def check_precision(precision: str, *, qat: bool = False, device: torch.device | None = None) -> None:
    """Raise a one-line ValueError where ``precision`` cannot be used: bf16 with INT8 QAT (its fake
    quantization expects float32 activations) or on a CUDA GPU without bfloat16; warn where a CPU has no
    native bfloat16 (it works, slower than float32).

    Example:
        >>> check_precision("fp32", qat=True)
        >>> check_precision("bf16", qat=True)
        Traceback (most recent call last):
        ...
        ValueError: precision='bf16' cannot train INT8 QAT (its fake quantization expects float32 activations); use precision='fp32' for the quantization stage
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if qat:
        raise ValueError(f"precision='bf16' {BF16_QAT}; use precision='fp32' for the quantization stage")
    if device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"precision='bf16': {torch.cuda.get_device_name(device)} has no bfloat16; use 'fp32'"
        )
    if (device is None or device.type == "cpu") and not set(NATIVE_BF16_ISA) & set(cpu_isa()):
        warnings.warn(
            "precision='bf16' on a CPU without native bfloat16 (no avx512_bf16 / amx_bf16): it trains, "
            "but slower than 'fp32'",
            UserWarning,
            stacklevel=3,
        )


def training_precision(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a training step's forward pass runs in: nothing for ``fp32``, ``torch.autocast`` to
    bfloat16 for ``bf16`` (see :attr:`TrainConfig.precision`)."""
    if cfg.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer a config names, over the model's trainable parameters: torch's own, in the variant of
    :mod:`shrinkviz.loop.optim` that does not import ``torch._dynamo`` (same results, 73 MiB less)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


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


EVAL_BATCH = 128
"""Examples per batch of :func:`evaluate`. Larger batches were not faster on the CPU and cost memory: one AMD
EPYC core, MnistNet channels-last on Fashion-MNIST's 10,000 test images, median of 5 (CPU time): batch 128
0.98 s, 256 0.94 s, 512 1.36 s, with 25, 54 and 99 MiB of peak memory; ResNet-20 at 32x32: 128 and 512
within 2%, 117 against 258 MiB. At the training batch size evaluation reuses the blocks training freed,
so it adds nothing to a sweep worker's peak."""


@torch.no_grad()
@steady_heap()
def evaluate(
    model: nn.Module,
    split: Split,
    normalize: Normalizer,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device | None = None,
    memory_format: str = "auto",
    per_example: bool = False,
) -> dict[str, Any]:
    """Loss, top-1 and top-5 over a whole split, exact: correct predictions summed over the true count.

    With ``per_example`` the result also holds ``correct``: a bool tensor, one entry per example of the
    split in its order, True where the top-1 prediction is right (what paired statistics need).

    The model runs in the layout :func:`training_layout` picks (see :data:`MEMORY_FORMATS`) and is handed
    back in its own.

    Example:
        >>> from shrinkviz.data import load_dataset, Normalizer
        >>> ds = load_dataset("digits")
        >>> always_0 = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))  # predicts class 0, then 1, 2, ...
        >>> _ = nn.init.zeros_(always_0[1].weight), always_0[1].bias.data.copy_(-torch.arange(10.0))
        >>> result = evaluate(always_0, ds.test, Normalizer(ds.mean, ds.std))
        >>> n = len(ds.test)
        >>> result["n"] == n, result["top1"] == int((ds.test.labels == 0).sum()) / n
        (True, True)
        >>> result["top5"] == int((ds.test.labels < 5).sum()) / n
        True
    """
    device = model_device(model) if device is None else resolve_device(device)
    layout, kept = training_layout(model, device, memory_format), model_layout(model)
    was_training = model.training
    model.eval()
    if layout is not kept:
        model.to(memory_format=layout)
    loss_sum = torch.zeros((), dtype=torch.float64)
    top1 = top5 = 0
    correct: list[torch.Tensor] = []
    try:
        for x, y in batches(split, batch_size, normalize, device):
            logits = model(x.contiguous(memory_format=layout) if x.dim() == 4 else x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double().cpu()
            top1 += count_correct(logits, y, 1)
            top5 += count_correct(logits, y, 5)
            if per_example:
                correct.append((logits.topk(1, dim=1).indices[:, 0] == y).cpu())  # as count_correct
    finally:
        if layout is not kept:
            model.to(memory_format=kept)
        model.train(was_training)
    n = len(split)
    out: dict[str, Any] = {"loss": float(loss_sum) / n, "top1": top1 / n, "top5": top5 / n, "n": n}
    if per_example:
        out["correct"] = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
    return out


def _validation_settings(device: torch.device) -> dict[str, Any]:
    return {"batch_size": EVAL_BATCH, "device": str(device), "memory_format": "auto"}


def validate(model: nn.Module, data: Dataset, device: str | torch.device | None = None) -> dict[str, Any]:
    """``evaluate(model, data.val, ...)`` with the dataset's normalisation, unless :func:`fit` validated this
    very model (every parameter and buffer unchanged) on this split at the end of its last epoch: then
    those figures, without evaluating twice (:mod:`shrinkviz.loop.validated`).

    Example:
        >>> from shrinkviz.data import load_dataset
        >>> from shrinkviz.models import create_model
        >>> ds = load_dataset("digits").subset(train=64, val=32, test=32)
        >>> net = create_model("tiny_mlp", dataset=ds)
        >>> last = fit(net, ds, TrainConfig(epochs=1), progress=False)[-1]
        >>> validate(net, ds)["top1"] == last["val_top1"]
        True
    """
    device = model_device(model) if device is None else resolve_device(device)
    normalize = Normalizer(data.mean, data.std)
    remembered = recall(model, data.val, normalize=normalize, **_validation_settings(device))
    return remembered if remembered is not None else evaluate(model, data.val, normalize, device=device)


MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
"""Layouts :func:`fit` and :func:`evaluate` run in. ``channels_last`` is faster for conv nets on the CPU:
measured with ``benchmarks/bench_fit.py`` (1 thread, CPU time per epoch, AMD EPYC), MnistNet on
Fashion-MNIST trains 1.46x faster (3.25 s vs 4.74 s for 12,800 images) and evaluates 2.3x faster,
ResNet-20 trains 1.30x faster; ``torch.compile`` of the model, foreach and fused SGD gained nothing.
``auto`` is channels-last for a conv net on the CPU unless :func:`channels_last_hazard` finds a layer that
torch 2.13's oneDNN trains wrongly in that layout, and contiguous otherwise (no conv, or CUDA). Channels-last
sums in another order: weights differ from contiguous training in the last float bits (both deterministic
per seed)."""

CHANNELS_LAST_MIN_CHANNELS = 16
"""torch 2.13's oneDNN writes past its buffers in the weight gradient of a 1x1 convolution with stride > 1
and fewer than 16 input channels in channels-last (seen as ``free(): invalid next size`` on TinyCNN at
3x64x64). Scanned here with glibc's malloc checker (``libc_malloc_debug``), 1x1 stride-2 convs with 1, 3 and
8 input channels at 48x48 and 64x64 inputs corrupted the heap, 16, 32 and 64 channels never did, nor 3x3 /
5x5 convs of strides 1 and 2 on the shapes of the registry's models; oneDNN off or contiguous, none did."""


def channels_last_hazard(model: nn.Module) -> str | None:
    """The first layer that must not train channels-last (see :data:`CHANNELS_LAST_MIN_CHANNELS`), or None.

    Example:
        >>> channels_last_hazard(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 1, stride=2)))
        '1: 1x1 conv, stride (2, 2), 8 input channels'
        >>> channels_last_hazard(nn.Conv2d(16, 32, 1, stride=2)) is None
        True
    """
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.Conv2d)
            and tuple(module.kernel_size) == (1, 1)
            and max(module.stride) > 1
            and module.in_channels // module.groups < CHANNELS_LAST_MIN_CHANNELS
        ):
            return f"{name}: 1x1 conv, stride {tuple(module.stride)}, {module.in_channels} input channels"
    return None


def model_layout(model: nn.Module) -> torch.memory_format:
    """The memory format of the model's 4-d weights, read from the first one whose layouts differ.

    A weight with one input channel (MnistNet's first conv, ``20x1x5x5``) or a 1x1 kernel is contiguous in
    both layouts, so it says nothing; reading it made :func:`evaluate` hand a channels-last model back
    contiguous, and every epoch after the first trained in mixed layouts, 1.5x slower.

    Example:
        >>> from shrinkviz.models import create_model
        >>> net = create_model("mnistnet", input_shape=(1, 28, 28)).to(memory_format=torch.channels_last)
        >>> model_layout(net) == torch.channels_last
        True
    """
    for param in model.parameters():
        if param.dim() == 4:
            is_cl = param.is_contiguous(memory_format=torch.channels_last)
            if is_cl != param.is_contiguous():
                return torch.channels_last if is_cl else torch.contiguous_format
    return torch.contiguous_format


def training_layout(
    model: nn.Module, device: torch.device, memory_format: str = "auto"
) -> torch.memory_format:
    """The layout :func:`fit` uses (see :data:`MEMORY_FORMATS`).

    Example:
        >>> from shrinkviz.models import create_model
        >>> cpu = torch.device("cpu")
        >>> mnistnet = create_model("mnistnet", input_shape=(1, 28, 28))
        >>> training_layout(mnistnet, cpu) == torch.channels_last
        True
        >>> training_layout(mnistnet, cpu, "contiguous") == torch.contiguous_format
        True
        >>> tiny = create_model("tiny_cnn", input_shape=(3, 64, 64))  # a 1x1 stride-2 shortcut from 8 channels
        >>> training_layout(tiny, cpu) == torch.contiguous_format
        True
    """
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format={memory_format!r}; valid: {', '.join(MEMORY_FORMATS)}")
    hazard = channels_last_hazard(model) if device.type == "cpu" else None
    if memory_format == "channels_last":
        if hazard:
            raise ValueError(
                f"memory_format='channels_last': {hazard} — torch's oneDNN corrupts memory training such a "
                "layer channels-last on the CPU; use memory_format='auto' or 'contiguous'"
            )
        return torch.channels_last
    if memory_format == "contiguous" or device.type != "cpu":
        return torch.contiguous_format
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if has_conv and hazard is None:
        return torch.channels_last
    return torch.contiguous_format


def count_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> int:
    """How many targets are among the top-``k`` logits (k capped at the class count)."""
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).sum())


def _selection_top1(
    select: str, model: nn.Module, data: Dataset, normalize: Normalizer, device: torch.device, val: dict
) -> float | None:
    """The top-1 an epoch is selected by (None for ``last``): validation, or ShrinkBench's test split
    (reusing the validation pass when the validation split is the test split, ``val_fraction=0``)."""
    if select == "best_val":
        return val["top1"]
    if select == "shrinkbench_best_test":
        return (
            val["top1"]
            if data.val is data.test
            else evaluate(model, data.test, normalize, device=device)["top1"]
        )
    return None


def _has_fake_quant(model: nn.Module) -> bool:
    from torch.ao.quantization import FakeQuantizeBase

    return any(isinstance(m, FakeQuantizeBase) for m in model.modules())


@steady_heap()
def fit(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    device: str | torch.device | None = None,
    stage: str = "train",
    progress: bool = True,
    memory_format: str = "auto",
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``data.train``, validating on ``data.val`` after every epoch.

    Args:
        model: any ``nn.Module`` mapping normalised images to logits.
        data: the dataset (its normalisation statistics are used).
        cfg: hyperparameters.
        callbacks: hooks for masks, QAT, distillation (see :class:`Callback`).
        seed: seeds shuffling, augmentation and any randomness in the model's forward.
        device: where to train (default: CUDA when present, else CPU).
        stage: label written in each history row.
        progress: show progress (a bar on a terminal or in Jupyter, else a few lines; see
            :func:`shrinkviz.core.progress.progress_bar`).
        memory_format: the layout of weights and batches while training (:data:`MEMORY_FORMATS`); the
            model is handed back contiguous.

    Returns:
        One dict per epoch: stage, epoch, lr, train_loss, task_loss, kd_loss, train_top1, val_loss,
        val_top1, val_top5, eval_s, epoch_s (and whatever callbacks add). ``epoch_s`` is the epoch's wall
        time, ``eval_s`` the part of it spent evaluating (the validation pass, and the test pass of a
        test-selected preset such as ``shrinkbench_exact``), so ``epoch_s - eval_s`` is the training.
    """
    device = resolve_device(device)
    check_precision(cfg.precision, qat=_has_fake_quant(model), device=device)
    callbacks = [*mask_callbacks(model, callbacks), *callbacks]
    layout = training_layout(model, device, memory_format)
    model.to(device, memory_format=layout)
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
    if cfg.select == "shrinkbench_best_test":  # ShrinkBench's max includes the model before training
        best = (
            evaluate(model, data.test, normalize, device=device)["top1"],
            copy.deepcopy(model.state_dict()),
        )
    step = 0
    bar = progress_bar(cfg.epochs * steps_per_epoch, stage, enabled=progress)
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        model.train()
        for cb in callbacks:
            cb.epoch_start(model, epoch)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for x, y in batches(data.train, cfg.batch_size, normalize, device, generator, augment):
            if x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            factor = lr_factor(cfg, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor
            with training_precision(cfg, device):
                logits = model(x).float()
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
        evaluating = time.perf_counter()
        val = evaluate(model, data.val, normalize, device=device)
        eval_s = time.perf_counter() - evaluating
        if epoch == cfg.epochs:  # what a caller measuring the handed-back model would evaluate again
            remember(model, data.val, val, normalize=normalize, **_validation_settings(device))
        row: dict[str, Any] = {
            "stage": stage,
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": float(sums["train_loss"]) / n_train,
            "task_loss": float(sums["task_loss"]) / n_train,
            "kd_loss": float(sums["kd_loss"]) / n_train if "kd_loss" in sums else float("nan"),
            "train_top1": int(correct) / n_train,
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
        }
        for cb in callbacks:
            cb.epoch_end(model, epoch, row)
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(
                f"training diverged at epoch {epoch} (loss {row['train_loss']}); "
                f"lower TrainConfig.lr (now {cfg.lr})"
            )
        selecting = time.perf_counter()
        score = _selection_top1(cfg.select, model, data, normalize, device, val)
        if score is not None and (best is None or score > best[0]):
            best = (score, copy.deepcopy(model.state_dict()))
        row["eval_s"] = eval_s + time.perf_counter() - selecting
        row["epoch_s"] = time.perf_counter() - started
        history.append(row)
        bar.set_postfix(val_top1=f"{val['top1']:.3f}")
    bar.close()
    if best is not None:
        model.load_state_dict(best[1])
    for cb in callbacks:
        cb.fit_end(model)
    if layout is not torch.contiguous_format:
        model.to(memory_format=torch.contiguous_format)
    return history
