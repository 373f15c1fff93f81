"""Knowledge distillation (Hinton, Vinyals & Dean 2015) as a callback of THE training loop.

The student minimises ``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``
where ``t`` / ``s`` are teacher / student logits and ``T`` the temperature (the ``T^2`` keeps the soft
term's gradients on the scale of the hard term's as ``T`` grows). :class:`DistillCallback` returns the total
and ``{"kd_loss": ...}`` from the ``loss`` hook, so ``fit`` logs the task loss and the KD loss separately.

The teacher is frozen: eval mode (BatchNorm uses its running statistics), no gradients, never updated.
By default it is the uncompressed pretrained baseline the student came from (found through the zoo
manifest that ``shrinkviz.pretrained`` attaches). The student may be float, pruned or fake-quant (QAT).

Example:
    >>> import shrinkviz as sv
    >>> from shrinkviz.loop.train import TrainConfig
    >>> ds = sv.load_dataset("digits").subset(train=128, val=32, test=32)
    >>> teacher = sv.create_model("tiny_cnn", dataset=ds, seed=0)
    >>> student = sv.create_model("tiny_mlp", dataset=ds, seed=1)
    >>> res = distill(student, ds, teacher=teacher, cfg=TrainConfig.preset("adam_fast").replace(epochs=1),
    ...               progress=False)
    >>> res.history[0]["stage"], res.history[0]["kd_loss"] >= 0
    ('D', True)
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkviz.core.device import model_device
from shrinkviz.core.verbs import make_module_callable
from shrinkviz.data import Dataset, as_dataset
from shrinkviz.loop.callbacks import Callback
from shrinkviz.loop.config import TrainConfig, resolve_config
from shrinkviz.loop.masks import check_masks
from shrinkviz.loop.train import fit
from shrinkviz.techniques.result import Result, as_model

TEMPERATURE = 4.0
"""Default distillation temperature ``T`` (every entry point: :func:`distill`, :class:`DistillCallback`, the
pipeline's D stage and ``Experiment.distill``)."""
ALPHA = 0.9
"""Default weight of the KD term (``1 - ALPHA`` weighs the cross-entropy)."""


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 3.0]])
        >>> float(kd_loss(z, z, 2.0))
        0.0
    """
    _check_temperature(temperature)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # half logits are computed in float32
    log_p_student = F.log_softmax(student_logits.to(dtype) / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r}: must be a finite number > 0")


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0 <= alpha <= 1):
        raise ValueError(f"alpha={alpha!r}: must be in [0, 1]")


def freeze(teacher: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with gradients off (in place); returns it."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def check_compatible(
    student: nn.Module,
    teacher: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> None:
    """Fail before training if teacher and student do not take the same inputs or give the same logits.

    Args:
        student, teacher: the models.
        input_shape: the data's (C, H, W) (default: the student's ``input_shape``).
        num_classes: the data's class count, checked against both models' outputs when given.

    Raises:
        ValueError: naming what differs (input shape or number of classes).
    """
    shape = tuple(input_shape or getattr(student, "input_shape", None) or ())
    if len(shape) != 3:
        raise ValueError("cannot check teacher/student compatibility without input_shape=(C, H, W)")
    for role, model in (("student", student), ("teacher", teacher)):
        declared = getattr(model, "input_shape", None)
        if declared is not None and tuple(declared) != shape:
            raise ValueError(
                f"{role} expects inputs of shape {tuple(declared)} but the data has {shape}: "
                "teacher and student must take the same inputs"
            )
    x = torch.zeros(2, *shape)
    outputs = {}
    for role, model in (("student", student), ("teacher", teacher)):
        was_training = model.training
        device = model_device(model)
        model.eval()
        try:
            with torch.no_grad():
                outputs[role] = model(x.to(device))
        except Exception as exc:  # noqa: BLE001 - reported with the role
            raise ValueError(f"{role} cannot take inputs of shape {shape}: {exc}") from exc
        finally:
            model.train(was_training)
    s, t = outputs["student"].shape, outputs["teacher"].shape
    if s != t:
        raise ValueError(
            f"teacher gives {t[-1]} logits per input but the student {s[-1]}: teacher and student "
            "must predict the same classes"
        )
    if num_classes is not None and s[-1] != num_classes:
        raise ValueError(f"the models give {s[-1]} logits but the data has {num_classes} classes")


class DistillCallback(Callback):
    """Adds the distillation term to the loss inside :func:`shrinkviz.loop.train.fit`.

    Args:
        teacher: the frozen teacher (put in eval mode with gradients off; moved to the batch's device).
        temperature: softmax temperature ``T`` (> 0).
        alpha: weight of the KD term in [0, 1]; ``1 - alpha`` weighs the cross-entropy.
    """

    def __init__(self, teacher: nn.Module, temperature: float = TEMPERATURE, alpha: float = ALPHA) -> None:
        _check_temperature(temperature)
        _check_alpha(alpha)
        self.teacher = freeze(teacher)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        freeze(self.teacher)

    def loss(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        logits: torch.Tensor,
        targets: torch.Tensor,
        task_loss: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.teacher.to(inputs.device)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        soft = kd_loss(logits, teacher_logits, self.temperature)
        total = (1.0 - self.alpha) * task_loss + self.alpha * soft
        return total, {"kd_loss": soft.detach()}


def baseline_teacher(student: nn.Module, progress: bool = False) -> nn.Module:
    """The uncompressed pretrained baseline a zoo model came from (via ``student.shrinkviz_manifest``).

    Raises:
        ValueError: the student carries no zoo manifest (pass ``teacher=`` explicitly).
    """
    manifest = getattr(student, "shrinkviz_manifest", None)
    spec = manifest.get("config") if isinstance(manifest, dict) else None
    if not spec:
        raise ValueError(
            "no teacher given and the student has no zoo manifest (it did not come from "
            "shrinkviz.pretrained); pass teacher= explicitly"
        )
    from shrinkviz.loop.zoo import pretrained

    cfg = TrainConfig.from_dict(spec["train_config"])
    recipe: Any = spec["recipe"] if spec["recipe"] != "custom" else cfg
    subset = tuple(spec["subset"]) if spec.get("subset") else None
    return pretrained(
        spec["model"],
        spec["dataset"],
        recipe,
        spec["seed"],
        epochs=cfg.epochs,
        subset=subset,
        progress=progress,
    )


def distill(
    model: nn.Module | Result,
    data: Dataset | str,
    cfg: TrainConfig | str | None = None,
    *,
    teacher: nn.Module | Result | None = None,
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
    callbacks: tuple[Callback, ...] = (),
    seed: int = 0,
    device: Any = None,
    stage: str = "D",
    progress: bool = True,
) -> Result:
    """Train ``model`` (the student) in place with knowledge distillation from ``teacher``.

    Args:
        model: the student (float, pruned — its masks are kept by ``fit`` — or fake-quant), or a Result.
        data: a ``shrinkviz.data.Dataset`` or dataset name.
        cfg: training config or preset name (default ``DEFAULTS["distill"]``, ``finetune_sgd_cosine``).
        teacher: the teacher; ``None`` = the student's uncompressed pretrained baseline (zoo manifest).
            A copy is frozen, so the caller's teacher is left untouched.
        temperature: ``T`` (> 0).
        alpha: KD weight in [0, 1].
        callbacks: further ``fit`` callbacks.
        seed, device, stage, progress: as in :func:`shrinkviz.loop.train.fit`.

    Returns:
        A :class:`Result`: the student itself and its history rows (with ``kd_loss``).

    Raises:
        ValueError: bad temperature / alpha, or teacher and student disagree on inputs or classes.
        TypeError: the 0.1 call form ``distill(student, teacher, data)`` (its message names the new one).
    """
    if isinstance(data, nn.Module | Result) or data is None:
        raise TypeError(
            "distill(student, teacher, data, ...) is the old call form; the teacher is now a keyword: "
            "distill(student, data, teacher=teacher, cfg=...)"
        )
    _check_temperature(temperature)
    _check_alpha(alpha)
    student = as_model(model)
    check_masks(student, "distill")
    data = as_dataset(data)
    cfg = resolve_config(cfg, "distill")
    teacher = (
        baseline_teacher(student, progress)
        if teacher is None
        else copy.deepcopy(as_model(teacher, "teacher"))
    )
    check_compatible(student, teacher, data.input_shape, data.num_classes)
    kd = DistillCallback(teacher, temperature, alpha)
    history = fit(
        student,
        data,
        cfg,
        callbacks=[kd, *callbacks],
        seed=seed,
        device=device,
        stage=stage,
        progress=progress,
    )
    return Result(student, history)


make_module_callable(__name__, distill)  # sv.distill(student, data, teacher=..., ...) runs the verb
