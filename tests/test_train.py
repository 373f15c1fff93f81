from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from shrinkviz.data import Dataset, Normalizer, Split
from shrinkviz.loop.train import PRESETS, Callback, TrainConfig, count_correct, evaluate, fit, lr_factor
from shrinkviz.models import create_model


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("lr", -0.1, "TrainConfig.lr=-0.1"),
        ("lr", float("nan"), "TrainConfig.lr=nan"),
        ("epochs", 0, "TrainConfig.epochs=0"),
        ("optimizer", "lion", "TrainConfig.optimizer='lion': unknown optimizer; valid: sgd, adam, adamw"),
        ("schedule", "linear", "TrainConfig.schedule='linear'"),
        ("weight_decay", -1.0, "TrainConfig.weight_decay=-1.0"),
        ("augment", "mixup", "TrainConfig.augment='mixup': valid: auto, none"),
    ],
)
def test_invalid_hyperparameters_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**{field: value})


def test_shrinkbench_preset_is_their_default():
    cfg = TrainConfig.shrinkbench()
    assert (
        cfg.optimizer,
        cfg.lr,
        cfg.momentum,
        cfg.nesterov,
        cfg.weight_decay,
        cfg.schedule,
        cfg.epochs,
        cfg.batch_size,
    ) == ("sgd", 1e-3, 0.9, True, 0.0, "constant", 30, 128)
    with pytest.raises(ValueError, match="unknown training preset 'nope'; valid: "):
        TrainConfig.preset("nope")


def test_config_round_trips_through_dict():
    for cfg in PRESETS.values():
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_dict({"epochs": 1, "lr_max": 2})


def test_lr_schedules():
    cos = TrainConfig(epochs=2, schedule="cosine")
    assert lr_factor(cos, 0, 10) == 1.0 and lr_factor(cos, 10, 10) == pytest.approx(0.5)
    assert lr_factor(cos, 20, 10) == pytest.approx(0.0, abs=1e-12)
    step = TrainConfig(epochs=4, schedule="step", milestones=(2, 3), gamma=0.5)
    assert [lr_factor(step, s * 10, 10) for s in range(4)] == [1.0, 1.0, 0.5, 0.25]
    warm = TrainConfig(epochs=3, schedule="constant", warmup_epochs=1)
    assert lr_factor(warm, 0, 4) == 0.25 and lr_factor(warm, 3, 4) == 1.0 and lr_factor(warm, 4, 4) == 1.0


class _FixedLogits(nn.Module):
    """Returns pre-set logits in order, so accuracy can be checked by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.pos = 0
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = self.logits[self.pos : self.pos + x.shape[0]]
        self.pos += x.shape[0]
        return out


def test_exact_top1_top5_on_a_hand_checked_batch():
    # 7 examples, 6 classes, evaluated in batches of 3 (last batch partial: ShrinkBench divided by 3 there)
    logits = torch.tensor(
        [
            [9, 1, 2, 3, 4, 5],  # y=0 top1 hit
            [1, 9, 2, 3, 4, 5],  # y=0 miss; 0 is rank 6 -> top5 miss
            [1, 2, 9, 3, 4, 5],  # y=5 miss top1; rank 2 -> top5 hit
            [6, 5, 4, 3, 2, 1],  # y=4 rank 5 -> top5 hit
            [1, 2, 3, 4, 5, 9],  # y=5 hit
            [1, 2, 3, 4, 9, 5],  # y=0 rank 6 -> miss
            [5, 4, 3, 2, 1, 9],  # y=5 hit
        ],
        dtype=torch.float32,
    )
    labels = torch.tensor([0, 0, 5, 4, 5, 0, 5])
    split = Split(torch.zeros(7, 1, 2, 2, dtype=torch.uint8), labels)
    result = evaluate(_FixedLogits(logits), split, Normalizer((0.5,), (0.5,)), batch_size=3, device="cpu")
    assert result["top1"] == 3 / 7 and result["top5"] == 5 / 7 and result["n"] == 7
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert count_correct(logits[:2], labels[:2], 10) == 2  # k capped at the class count


def test_training_is_deterministic_for_a_seed(digits):
    data = digits.subset(train=300, val=100)
    cfg = TrainConfig.preset("adam_fast").replace(epochs=2, augment="crop_flip", batch_size=32)
    runs = []
    for _ in range(2):
        model = create_model("tiny_cnn", dataset=data, seed=3)
        history = fit(model, data, cfg, seed=11, progress=False, device="cpu")
        runs.append(([(r["train_loss"], r["val_top1"], r["val_loss"]) for r in history], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key in runs[0][1]:
        torch.testing.assert_close(runs[0][1][key], runs[1][1][key], rtol=0, atol=0)
    other = create_model("tiny_cnn", dataset=data, seed=3)
    fit(other, data, cfg, seed=12, progress=False, device="cpu")
    assert not torch.equal(other.classifier.weight, runs[0][1]["classifier.weight"])


def test_fit_learns_and_reports_history(digits):
    model = create_model("tiny_mlp", dataset=digits, seed=0)
    history = fit(model, digits, TrainConfig.preset("adam_fast").replace(epochs=5), progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    assert set(history[0]) >= {
        "stage",
        "lr",
        "train_loss",
        "task_loss",
        "kd_loss",
        "train_top1",
        "val_loss",
        "val_top1",
        "val_top5",
        "epoch_s",
    }
    assert math.isnan(history[0]["kd_loss"])
    assert history[-1]["val_top1"] > 0.85 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_callbacks_plug_into_the_one_loop(digits):
    data = digits.subset(train=64, val=32)
    calls = []

    class Recorder(Callback):
        def fit_start(self, model, optimizer):
            calls.append("fit_start")

        def epoch_start(self, model, epoch):
            calls.append(f"epoch_start{epoch}")

        def loss(self, model, inputs, logits, targets, task_loss):
            return task_loss * 2, {"kd_loss": torch.tensor(1.5)}

        def after_step(self, model):
            calls.append("step")

        def epoch_end(self, model, epoch, row):
            row["extra"] = epoch

        def fit_end(self, model):
            calls.append("fit_end")

    history = fit(
        create_model("tiny_mlp", dataset=data),
        data,
        TrainConfig(epochs=2, batch_size=32, lr=0.01),
        callbacks=[Recorder()],
        progress=False,
    )
    assert calls == ["fit_start", "epoch_start1", "step", "step", "epoch_start2", "step", "step", "fit_end"]
    assert history[0]["kd_loss"] == pytest.approx(1.5) and history[1]["extra"] == 2
    assert history[0]["train_loss"] == pytest.approx(2 * history[0]["task_loss"], rel=1e-5)


def test_best_val_selection_restores_best_epoch(digits):
    data = digits.subset(train=200, val=100)
    model = create_model("tiny_mlp", dataset=data, seed=0)
    history = fit(
        model, data, TrainConfig.preset("adam_fast").replace(epochs=3, select="best_val"), progress=False
    )
    best = max(r["val_top1"] for r in history)
    assert evaluate(model, data.val, Normalizer(data.mean, data.std))["top1"] == best


def test_divergence_is_reported(digits):
    data = digits.subset(train=64, val=32)

    class Diverge(Callback):
        def loss(self, model, inputs, logits, targets, task_loss):
            return task_loss * float("inf"), {}

    with pytest.raises(FloatingPointError, match="training diverged at epoch 1 .* lower TrainConfig.lr"):
        fit(
            create_model("tiny_mlp", dataset=data),
            data,
            TrainConfig(epochs=2, lr=0.01),
            callbacks=[Diverge()],
            progress=False,
        )


def test_auto_augmentation_follows_the_dataset(digits, monkeypatch):
    import dataclasses

    import shrinkviz.loop.train as train_module

    seen = []
    real = train_module.batches

    def spy(split, batch_size, normalize, device, generator=None, augment="none", **kw):
        if generator is not None:
            seen.append(augment)
        return real(split, batch_size, normalize, device, generator, augment, **kw)

    monkeypatch.setattr(train_module, "batches", spy)
    data = digits.subset(train=32, val=16)
    assert data.augment == "none"
    fit(create_model("tiny_mlp", dataset=data), data, TrainConfig(epochs=1, lr=0.01), progress=False)
    cifar_like = dataclasses.replace(data, augment="crop_flip")
    fit(create_model("tiny_mlp", dataset=data), cifar_like, TrainConfig(epochs=1, lr=0.01), progress=False)
    fit(
        create_model("tiny_mlp", dataset=data),
        cifar_like,
        TrainConfig(epochs=1, lr=0.01, augment="flip"),
        progress=False,
    )
    assert seen == ["none", "crop_flip", "flip"]


def test_resolve_takes_a_config_or_a_preset_name():
    cfg = TrainConfig(epochs=3)
    assert TrainConfig.resolve(cfg) is cfg and TrainConfig.resolve("shrinkbench") == TrainConfig.shrinkbench()
    with pytest.raises(TypeError, match=r"finetune=3: give a TrainConfig or a preset name \(adam_fast"):
        TrainConfig.resolve(3, "finetune")


def test_channels_last_training_is_deterministic_and_close_to_contiguous():
    from shrinkviz.data import load_dataset
    from shrinkviz.loop.train import model_layout

    data = load_dataset("digits").subset(train=256, val=64, test=64)
    cfg = TrainConfig.preset("adam_fast").replace(epochs=2)

    def trained(memory_format):
        model = create_model("resnet8", dataset=data, seed=0)  # its 1x1 stride-2 shortcuts read 16 channels
        history = fit(model, data, cfg, seed=3, progress=False, memory_format=memory_format)
        return model, history

    (a, ha), (b, _), (_, hc) = trained("auto"), trained("channels_last"), trained("contiguous")
    assert model_layout(a) == torch.contiguous_format  # handed back contiguous
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key  # deterministic per seed
    assert abs(ha[-1]["val_top1"] - hc[-1]["val_top1"]) <= 1 / 64 + 1e-9
    # the math is the same up to summation order: one batch's loss and gradients agree in both layouts
    # (over whole trainings the last-bit differences grow, as any reassociation does under Adam)
    net = create_model("resnet8", dataset=data, seed=0)
    x, y = data.train.images[:32].float() / 255, data.train.labels[:32]
    grads = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        net.zero_grad()
        net.to(memory_format=layout)
        torch.nn.functional.cross_entropy(net(x.contiguous(memory_format=layout)), y).backward()
        grads[layout] = [p.grad.clone() for p in net.parameters()]
    for g1, g2 in zip(grads[torch.contiguous_format], grads[torch.channels_last], strict=True):
        torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="memory_format='nhwc'"):
        fit(create_model("tiny_cnn", dataset=data), data, cfg, memory_format="nhwc")


def test_every_epoch_trains_in_the_chosen_layout_even_when_the_first_conv_has_one_input_channel():
    # MnistNet's first weight (20x1x5x5) is contiguous in both layouts; reading the layout from it made the
    # validation after epoch 1 hand the model back contiguous, so epochs 2+ trained in mixed layouts
    from shrinkviz.loop.train import model_layout

    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8)
    split = Split(images, torch.randint(0, 10, (96,)))
    data = Dataset("noise", split, split, split, 10, (0.5,), (0.25,))
    seen = []

    class Layout(Callback):
        def epoch_start(self, model, epoch):
            seen.append(model_layout(model))

    model = create_model("mnistnet", input_shape=(1, 28, 28), seed=0)
    fit(model, data, TrainConfig.preset("adam_fast").replace(epochs=3, batch_size=32), callbacks=[Layout()],
        progress=False)  # fmt: skip
    assert seen == [torch.channels_last] * 3
    assert model_layout(model) == torch.contiguous_format  # handed back contiguous
    evaluate(model.to(memory_format=torch.channels_last), split, Normalizer(data.mean, data.std))
    assert model_layout(model) == torch.channels_last  # evaluate hands the model back in its own layout


def test_auto_layout_keeps_layers_oneDNN_trains_wrongly_in_channels_last_contiguous():
    from shrinkviz.loop.train import channels_last_hazard, training_layout

    cpu = torch.device("cpu")
    tiny = create_model("tiny_cnn", input_shape=(3, 64, 64))  # shortcut: 1x1 stride-2 conv from 8 channels
    assert channels_last_hazard(tiny) == "features.2.shortcut.conv: 1x1 conv, stride (2, 2), 8 input channels"
    assert training_layout(tiny, cpu) == torch.contiguous_format
    with pytest.raises(ValueError, match="features.2.shortcut.conv: 1x1 conv.*use memory_format='auto'"):
        training_layout(tiny, cpu, "channels_last")
    for arch, shape in (("mnistnet", (1, 28, 28)), ("resnet20", (3, 32, 32)), ("resnet18", (3, 32, 32))):
        assert training_layout(create_model(arch, input_shape=shape), cpu) == torch.channels_last, arch
    assert training_layout(create_model("tiny_mlp"), cpu) == torch.contiguous_format  # no conv
    assert training_layout(create_model("mnistnet"), torch.device("meta")) == torch.contiguous_format


def test_evaluate_per_example_agrees_with_the_count(digits):
    from shrinkviz.data import Normalizer
    from shrinkviz.loop.train import evaluate
    from shrinkviz.models import create_model

    model = create_model("tiny_mlp", dataset=digits, seed=0).eval()
    out = evaluate(model, digits.test, Normalizer(digits.mean, digits.std), batch_size=7, per_example=True)
    assert out["correct"].dtype == torch.bool and out["correct"].numel() == len(digits.test)
    assert int(out["correct"].sum()) / len(digits.test) == out["top1"]
    assert "correct" not in evaluate(model, digits.test, Normalizer(digits.mean, digits.std))


def _counting_evaluate(monkeypatch):
    """Count the evaluations ``validate`` makes (it calls the module's ``evaluate``)."""
    from shrinkviz.loop import train

    calls = []
    real = train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    return calls


def test_validate_reuses_fits_last_validation_only_for_the_very_same_model_and_split(digits, monkeypatch):
    from shrinkviz.loop.train import validate

    data = digits.subset(train=200, val=100)
    model = create_model("tiny_cnn", dataset=data, seed=0)
    history = fit(model, data, TrainConfig.preset("adam_fast").replace(epochs=2), progress=False)
    calls = _counting_evaluate(monkeypatch)
    fresh = evaluate(model, data.val, Normalizer(data.mean, data.std))
    calls.clear()
    assert validate(model, data) == {k: v for k, v in fresh.items()} and calls == []  # no second evaluation
    assert validate(model, data)["top1"] == history[-1]["val_top1"]
    # the same images in another split object, or the split changed in place: evaluated again
    validate(
        model,
        Dataset(
            "x",
            data.train,
            Split(data.val.images.clone(), data.val.labels),
            data.test,
            10,
            data.mean,
            data.std,
        ),
    )
    assert calls == [100]
    copy_ = create_model("tiny_cnn", dataset=data, seed=0)
    copy_.load_state_dict(model.state_dict())
    validate(copy_, data)  # an equal model that fit never validated
    assert calls == [100, 100]
    with torch.no_grad():
        model.classifier.bias[0] += 1e-3  # one parameter moved
    validate(model, data)
    assert calls == [100, 100, 100]


def test_validate_evaluates_a_model_whose_buffers_or_selected_epoch_differ(digits, monkeypatch):
    from shrinkviz.loop.train import validate

    data = digits.subset(train=200, val=100)
    bn = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    fit(bn, data, TrainConfig.preset("adam_fast").replace(epochs=1), progress=False)
    calls = _counting_evaluate(monkeypatch)
    validate(bn, data)
    assert calls == []
    bn[2].running_mean += 0.5  # a buffer, not a parameter
    validate(bn, data)
    assert calls == [100]
    calls.clear()
    # best_val restored an earlier epoch: its state is not the one validated last
    model = create_model("tiny_mlp", dataset=data, seed=0)
    history = fit(
        model, data, TrainConfig(epochs=4, optimizer="sgd", lr=2.0, select="best_val"), progress=False
    )
    best = max(range(4), key=lambda i: history[i]["val_top1"])
    assert best < 3  # lr 2.0 overshoots after the first epoch (deterministic for this seed)
    calls.clear()
    got = validate(model, data)
    assert got["top1"] == history[best]["val_top1"]
    assert calls == [100]


def test_precision_is_validated_and_written_only_when_not_fp32():
    with pytest.raises(ValueError, match=r"TrainConfig.precision='fp16': valid: fp32, bf16"):
        TrainConfig(precision="fp16")
    assert "precision" not in TrainConfig().to_dict()  # baseline checkpoint keys saved before it stay valid
    bf16 = TrainConfig(precision="bf16")
    assert bf16.to_dict()["precision"] == "bf16" and TrainConfig.from_dict(bf16.to_dict()) == bf16


def test_bf16_training_is_deterministic_per_seed_different_from_fp32_and_evaluates_in_fp32(digits):
    from shrinkviz.loop import train as train_module

    data = digits.subset(train=256, val=64, test=64)
    cfg = TrainConfig.preset("adam_fast").replace(epochs=2, batch_size=32)

    def trained(precision):
        model = create_model("tiny_cnn", dataset=data, seed=0)
        history = fit(model, data, cfg.replace(precision=precision), seed=3, progress=False, device="cpu")
        return model, history

    (a, ha), (b, hb), (c, hc) = trained("bf16"), trained("bf16"), trained("fp32")
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), key
        assert not va.is_floating_point() or va.dtype == torch.float32, key  # autocast casts copies
    assert not torch.equal(a.classifier.weight, c.classifier.weight)  # bf16 products are not fp32's
    assert abs(ha[-1]["train_loss"] - hc[-1]["train_loss"]) < 0.05 * hc[-1]["train_loss"]
    # the reported validation is float32: the trained model evaluated again outside any autocast
    assert ha[-1]["val_top1"] == evaluate(a, data.val, Normalizer(data.mean, data.std))["top1"]

    seen = []
    real = train_module.training_precision
    train_module.training_precision = lambda cfg, device: seen.append(cfg.precision) or real(cfg, device)
    try:
        fit(create_model("tiny_cnn", dataset=data, seed=0), data, cfg.replace(epochs=1), progress=False)
    finally:
        train_module.training_precision = real
    assert seen and set(seen) == {"fp32"}


def test_bf16_refuses_qat_before_any_work_and_warns_on_a_cpu_without_native_bf16(digits, monkeypatch):
    from shrinkviz.loop import train as train_module
    from shrinkviz.techniques.quant import prepare_qat, quantize

    data = digits.subset(train=64, val=32, test=32)
    cfg = TrainConfig.preset("adam_fast").replace(epochs=1, precision="bf16")
    qat = prepare_qat(create_model("tiny_cnn", dataset=data, seed=0))
    before = {k: v.clone() for k, v in qat.state_dict().items()}
    with pytest.raises(ValueError, match="precision='bf16' cannot train INT8 QAT"):
        fit(qat, data, cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in qat.state_dict().items())
    with pytest.raises(ValueError, match="precision='bf16' cannot train INT8 QAT"):
        quantize(create_model("tiny_cnn", dataset=data, seed=0), data, "qat", cfg=cfg, progress=False)

    monkeypatch.setattr(train_module, "cpu_isa", lambda: ("avx2", "fma"))
    with pytest.warns(UserWarning, match="without native bfloat16"):
        fit(create_model("tiny_mlp", dataset=data, seed=0), data, cfg, progress=False, device="cpu")
    monkeypatch.setattr(train_module, "cpu_isa", lambda: ("avx2", "avx512_bf16"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(create_model("tiny_mlp", dataset=data, seed=0), data, cfg, progress=False, device="cpu")
