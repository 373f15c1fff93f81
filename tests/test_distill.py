"""Knowledge distillation: the loss against a hand computation, the callback inside fit, a frozen
teacher, the default teacher, and mismatches caught before training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import shrinkviz as sv
from shrinkviz.loop.train import TrainConfig, fit
from shrinkviz.models import create_model
from shrinkviz.techniques.distill import DistillCallback, baseline_teacher, check_compatible, distill, kd_loss

CFG = TrainConfig.preset("adam_fast").replace(epochs=2, batch_size=64)


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(train=192, val=64, test=64)


def _hand_kd(student: list[list[float]], teacher: list[list[float]], t: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        zs = sum(math.exp(v / t) for v in s_row)
        zt = sum(math.exp(v / t) for v in t_row)
        for sv_, tv in zip(s_row, t_row, strict=True):
            p_t, p_s = math.exp(tv / t) / zt, math.exp(sv_ / t) / zs
            total += p_t * (math.log(p_t) - math.log(p_s))
    return t * t * total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 7.5])
def test_kd_loss_matches_hand_computation(temperature):
    student = [[1.0, -2.0, 0.5, 3.0], [0.0, 0.1, -0.3, 2.0]]
    teacher = [[2.0, -1.0, 0.0, 1.0], [-1.0, 0.5, 0.5, 4.0]]
    got = kd_loss(
        torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64), temperature
    )
    assert got.dtype == torch.float64
    torch.testing.assert_close(
        got,
        torch.tensor(_hand_kd(student, teacher, temperature), dtype=torch.float64),
        rtol=1e-12,
        atol=1e-14,
    )
    got32 = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert got32.item() == pytest.approx(_hand_kd(student, teacher, temperature), rel=1e-5)
    assert float(kd_loss(torch.tensor(teacher), torch.tensor(teacher), temperature)) == pytest.approx(
        0, abs=1e-7
    )


def test_callback_combines_ce_and_kd():
    teacher = create_model("tiny_mlp", input_shape=(1, 8, 8), seed=1)
    cb = DistillCallback(teacher, temperature=3.0, alpha=0.7)
    x = torch.randn(5, 1, 8, 8)
    logits = torch.randn(5, 10, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4])
    ce = F.cross_entropy(logits, y)
    total, extra = cb.loss(None, x, logits, y, ce)
    with torch.no_grad():
        expected_kd = kd_loss(logits, teacher(x), 3.0)
    torch.testing.assert_close(extra["kd_loss"], expected_kd)
    torch.testing.assert_close(total, 0.3 * ce + 0.7 * expected_kd)
    total.backward()
    assert logits.grad is not None and all(p.grad is None for p in teacher.parameters())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_fit_logs_task_and_kd_loss_separately(small):
    teacher = create_model("tiny_cnn", dataset=small, seed=1)
    student = create_model("tiny_mlp", dataset=small, seed=2)
    teacher_state = copy.deepcopy(teacher.state_dict())
    teacher.train()
    rows = distill(
        student, small, cfg=CFG, teacher=teacher, temperature=4.0, alpha=0.9, progress=False
    ).history
    assert [r["stage"] for r in rows] == ["D", "D"]
    for row in rows:
        assert math.isfinite(row["kd_loss"]) and row["kd_loss"] > 0
        assert row["train_loss"] == pytest.approx(0.1 * row["task_loss"] + 0.9 * row["kd_loss"], rel=1e-5)
    for key, value in teacher.state_dict().items():  # the caller's teacher is untouched (BN stats too)
        assert torch.equal(value, teacher_state[key]), key
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_alpha_zero_is_plain_training(small):
    teacher = create_model("tiny_cnn", dataset=small, seed=1)
    a, b = create_model("tiny_mlp", dataset=small, seed=2), create_model("tiny_mlp", dataset=small, seed=2)
    distill(a, small, cfg=CFG, teacher=teacher, alpha=0.0, progress=False)
    fit(b, small, CFG, progress=False)
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=key)


def test_mismatches_are_caught_before_training(small):
    student = create_model("tiny_mlp", dataset=small, seed=0)
    before = copy.deepcopy(student.state_dict())
    with pytest.raises(ValueError, match="teacher gives 5 logits per input but the student 10"):
        distill(
            student,
            small,
            cfg=CFG,
            teacher=create_model("tiny_mlp", input_shape=(1, 8, 8), num_classes=5),
            progress=False,
        )
    with pytest.raises(ValueError, match=r"teacher expects inputs of shape \(1, 28, 28\)"):
        distill(
            student, small, cfg=CFG, teacher=create_model("tiny_mlp", input_shape=(1, 28, 28)), progress=False
        )
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key])
    with pytest.raises(ValueError, match="data has 10 classes"):
        check_compatible(
            create_model("tiny_mlp", input_shape=(1, 8, 8), num_classes=4),
            create_model("tiny_mlp", input_shape=(1, 8, 8), num_classes=4),
            (1, 8, 8),
            10,
        )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": 0}, "temperature=0"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"alpha": 1.5}, "alpha=1.5"),
    ],
)
def test_bad_hyperparameters(kwargs, field, small):
    student = create_model("tiny_mlp", dataset=small)
    with pytest.raises(ValueError, match=field):
        distill(student, small, cfg=CFG, teacher=copy.deepcopy(student), progress=False, **kwargs)


def test_default_teacher_is_the_pretrained_baseline(small):
    baseline = sv.pretrained("tiny_mlp", small, epochs=1, progress=False)
    student = copy.deepcopy(baseline)
    teacher = baseline_teacher(student)
    assert teacher.shrinkviz_manifest["sha256"] == baseline.shrinkviz_manifest["sha256"]
    for key, value in baseline.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value)
    rows = distill(student, small, cfg=CFG.replace(epochs=1), teacher=None, progress=False).history
    assert math.isfinite(rows[0]["kd_loss"])
    with pytest.raises(ValueError, match="pass teacher="):
        distill(create_model("tiny_mlp", dataset=small), small, cfg=CFG, teacher=None, progress=False)


def test_distilling_a_fake_quant_student_keeps_it_trainable(small):
    from shrinkviz.techniques.quant import convert, is_int8, prepare_qat

    teacher = create_model("tiny_cnn", dataset=small, seed=1)
    student = prepare_qat(create_model("tiny_cnn", dataset=small, seed=2))
    rows = distill(student, small, cfg=CFG.replace(epochs=1), teacher=teacher, progress=False).history
    assert math.isfinite(rows[0]["kd_loss"])
    assert is_int8(convert(student))
