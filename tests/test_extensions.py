"""Adding a strategy, a model, a dataset, a runtime or a technique is one registration, and the new name
then works in a sweep with no other edit: the registries all have one shape.

Each test registers its plug-in inside ``Registry.scoped()`` so the registry is as before afterwards.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import shrinkviz as sv
from shrinkviz.core.registry import UnknownNameError
from shrinkviz.data import DATASETS, from_tensors
from shrinkviz.deploy.runtimes import RUNTIMES, Runner
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.techniques import TECHNIQUES
from shrinkviz.models import MODELS
from shrinkviz.techniques.prune import STRATEGIES
from shrinkviz.techniques.result import Result

BASE = Experiment(
    model="tiny_mlp",
    data={"name": "digits", "train": 256, "val": 64, "test": 128},
    baseline={"epochs": 1},
    finetune={"preset": "adam_fast", "epochs": 1},
    latency={"runtimes": []},
)


def _ok(result: sv.sweep.SweepResult) -> list[dict]:
    rows = result.runs.to_dict("records")
    assert all(r["status"] == "ok" for r in rows), [r["error"][:300] for r in rows if r["status"] != "ok"]
    return rows


def test_a_strategy_is_one_registration(tmp_path):
    with STRATEGIES.scoped():

        @sv.register_strategy("smallest_first", scope="layer")
        def smallest_first(module, name, weight, ctx):
            return -weight.abs()

        result = sv.sweep(
            BASE.replace(strategy="smallest_first", compression=4), store=tmp_path, progress=False
        )
    (row,) = _ok(result)
    assert (row["method"], row["strategy"]) == ("prune", "smallest_first")
    assert row["compression_ratio"] == pytest.approx(4.0, abs=0.01)
    assert "smallest_first" not in sv.available_strategies()


def test_a_model_is_one_registration(tmp_path):
    with MODELS.scoped():

        @sv.register_model("two_layer")
        def two_layer(input_shape, num_classes):
            c, h, w = input_shape
            return nn.Sequential(
                nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes)
            )

        exp = BASE.replace(model="two_layer", strategy="global_weight", compression=2)
        result = sv.sweep([BASE.replace(model="two_layer"), exp], store=tmp_path, progress=False)
    baseline, pruned = sorted(_ok(result), key=lambda r: r["method"])
    assert baseline["params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert pruned["compression_ratio"] == pytest.approx(2.0, abs=0.01)
    assert "two_layer" not in sv.available_models()


def test_a_dataset_is_one_registration(tmp_path):
    with DATASETS.scoped():

        @sv.register_dataset("stripes")
        def stripes(*, val_fraction, **_):
            g = torch.Generator().manual_seed(0)
            labels = torch.randint(0, 2, (300,), generator=g)
            images = torch.zeros(300, 1, 8, 8, dtype=torch.uint8)
            images[labels == 1, :, :, :4] = 255  # class 1: left half lit
            images[labels == 0, :, :, 4:] = 255
            return from_tensors(
                "stripes", images[:240], labels[:240], images[240:], labels[240:], val_fraction=val_fraction
            )

        exp = BASE.replace(
            **{"data.name": "stripes", "data.train": None, "data.val": None, "data.test": None}
        )
        result = sv.sweep(exp, store=tmp_path, progress=False)
    (row,) = _ok(result)
    assert row["dataset"] == "stripes" and row["top1"] == 1.0  # separable stripes, learnt in one epoch
    assert "stripes" not in sv.available_datasets()


def test_a_runtime_is_one_registration(tmp_path):
    with RUNTIMES.scoped():

        @sv.register_runtime("inference_mode")
        def inference_mode(model, x, threads, dtype):
            def call():
                with torch.inference_mode():
                    return model(x)

            return Runner("inference_mode", dtype, f"PyTorch inference_mode ({dtype.upper()})", call)

        exp = BASE.replace(
            **{"latency.runtimes": ["inference_mode"], "latency.rounds": 3, "latency.min_time_s": 0}
        )
        result = sv.sweep(exp, store=tmp_path, progress=False)
        assert "inference_mode" in sv.available_runtimes()
    (row,) = _ok(result)
    assert row["latency_runtime"] == "inference_mode" and row["latency_ms_p50"] > 0
    assert "inference_mode" not in sv.available_runtimes()


def test_a_technique_is_one_registration(tmp_path):
    with TECHNIQUES.scoped():

        @sv.register_technique("halve_weights")
        def halve_weights(exp, baseline, data, progress):
            model = copy.deepcopy(baseline)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(exp.technique.params["factor"])
            return Result(model, [{"stage": "halve", "epoch": 1}])

        exp = BASE.replace(technique={"name": "halve_weights", "params": {"factor": 0.5}})
        result = sv.sweep([BASE, exp], store=tmp_path, progress=False)
    rows = {r["method"]: r for r in _ok(result)}
    assert set(rows) == {"baseline", "halve_weights"}
    assert rows["halve_weights"]["params"] == rows["baseline"]["params"]
    assert result.history.query("stage == 'halve'").shape[0] == 1
    assert BASE.run_id == Experiment.from_json(BASE.to_json()).run_id and "technique" not in BASE.to_dict()
    with pytest.raises(ValueError, match="Experiment.technique.name='halve_weights'"):
        BASE.replace(technique={"name": "halve_weights"})  # unregistered again


@pytest.mark.parametrize(
    ("lookup", "kind", "suggestion"),
    [
        (lambda: sv.create_model("resnet2"), "model", "resnet20"),
        (lambda: sv.load_dataset("fashion_mnst"), "dataset", "fashion_mnist"),
        (lambda: sv.prune(nn.Linear(2, 2), strategy="global_weigth"), "pruning strategy", "global_weight"),
        (lambda: RUNTIMES.get("onnxruntme"), "runtime", "onnxruntime"),
        (lambda: TECHNIQUES.get("pipline"), "technique", "pipeline"),
        (lambda: sv.TrainConfig.preset("shrinkbenc"), "training preset", "shrinkbench"),
    ],
)
def test_every_registry_says_did_you_mean(lookup, kind, suggestion):
    with pytest.raises(UnknownNameError, match=rf"unknown {kind}.*did you mean .*'{suggestion}'"):
        lookup()


def test_verbs_show_their_real_signatures():
    for verb, first in (
        (sv.prune, ["model", "data", "strategy"]),
        (sv.sweep, ["base", "executor"]),
        (sv.pipeline, ["model", "data", "order"]),
        (sv.distill, ["model", "data", "cfg"]),
        (sv.finetune, ["model", "data", "cfg"]),
    ):
        assert list(inspect.signature(verb).parameters)[: len(first)] == first


def test_every_compression_verb_returns_a_result_and_takes_one(tmp_path):
    data = sv.load_dataset("digits").subset(train=128, val=32, test=32)
    cfg = sv.TrainConfig.preset("adam_fast").replace(epochs=1)
    model = sv.create_model("tiny_cnn", dataset=data, seed=0)
    pruned = sv.prune(model, data, strategy="global_weight", compression=2, cfg=cfg, progress=False)
    tuned = sv.finetune(pruned, data, cfg=cfg, progress=False)
    int8 = sv.quantize(tuned, data, "ptq")
    taught = sv.distill(
        sv.create_model("tiny_mlp", dataset=data, seed=1), data, cfg=cfg, teacher=tuned, progress=False
    )
    staged = sv.pipeline(model, data, "PD", epochs=(1, 1), cfg=cfg, progress=False)
    channels = sv.prune.prune_channels(model, data, keep=0.5, cfg=cfg, progress=False)
    rounds = sv.prune.iterative_prune(
        model, data, strategy="global_weight", compression=4, rounds=2, cfg=cfg, progress=False
    )
    for result, stages in (
        (pruned, ["finetune"]),
        (tuned, ["finetune"]),
        (int8, []),
        (taught, ["D"]),
        (staged, ["P", "D"]),
        (channels, ["finetune"]),
        (rounds, ["prune_round1", "prune_round2"]),
    ):
        assert isinstance(result, Result) and isinstance(result.model, nn.Module)
        assert [row["stage"] for row in result.history] == stages
    assert tuned.model is pruned.model  # finetuning trains in place
    model_again, history = rounds  # a Result unpacks like the 0.1 (model, history) pair
    assert model_again is rounds.model and history == rounds.history


def test_old_call_forms_fail_with_the_new_one():
    model = sv.create_model("tiny_mlp", input_shape=(1, 8, 8))
    with pytest.raises(
        TypeError, match=r"prune\(model, data, strategy='global_weight', compression=\.\.\.\)"
    ):
        sv.prune(model, "global_weight", 8)
    with pytest.raises(TypeError, match=r"distill\(student, data, teacher=teacher"):
        sv.distill(model, copy.deepcopy(model), "digits")
    with pytest.raises(TypeError, match=r"prune_channels\(model, data, keep=0.5\)"):
        sv.prune.prune_channels(model, 0.5)
    with pytest.raises(
        AttributeError, match=r"the compressed model is \.model \(e\.g\. result\.model\.state_dict\)"
    ):
        sv.prune(model, strategy="global_weight", compression=2).state_dict()
    with pytest.raises(
        ModuleNotFoundError, match=r"shrinkviz\.train moved: import from shrinkviz\.loop\.train"
    ):
        import shrinkviz.train  # noqa: F401


def test_runner_distill_and_ptq_branches(tmp_path):
    distilled = BASE.replace(**{"distill.enabled": True, "distill.student": "tiny_cnn", "distill.epochs": 1})
    ptq = BASE.replace(**{"quant.method": "ptq"})
    result = sv.sweep([distilled, ptq], store=tmp_path, progress=False)
    rows = {r["method"]: r for r in _ok(result)}
    assert rows["distill"]["model"] == "tiny_mlp"  # the factor is the baseline's architecture
    history = result.history.merge(result.runs[["run_id", "method"]], on="run_id")
    assert history.query("method == 'distill'")["stage"].tolist() == ["D"]
    assert history.query("method == 'quant'").empty  # PTQ does not train
    assert (
        rows["distill"]["params"] != rows["quant"]["params"]
        or rows["distill"]["macs"] != rows["quant"]["macs"]
    )
    assert rows["quant"]["quantization"] == "ptq" and 0 <= rows["quant"]["top1"] <= 1


def test_prune_channels_technique_runs_structured_and_int8_and_checks_its_params(tmp_path):
    from shrinkviz.experiments.experiment import Experiment

    base = Experiment(
        model="tiny_cnn",
        data={"name": "digits", "train": 128, "val": 32, "test": 64},
        baseline={"epochs": 1},
        finetune={"epochs": 1, "examples": 32},
        latency={"runtimes": []},
    )
    half = base.replace(technique={"name": "prune_channels", "params": {"keep": 0.5}})
    int8 = half.replace(quant={"method": "ptq"})  # the technique applies Experiment.quant itself
    runs = sv.sweep([base, half, int8], store=tmp_path / "s", executor="local", progress=False).runs
    by = runs.set_index("run_id")
    assert (by["status"] == "ok").all()
    assert by.loc[half.run_id, "params"] < 0.5 * by.loc[base.run_id, "params"]  # channels removed, not zeroed
    assert by.loc[half.run_id, "params_nonzero"] == pytest.approx(by.loc[half.run_id, "params"], rel=0.05)
    assert by.loc[int8.run_id, "quantization"] != "none" and by.loc[half.run_id, "quantization"] == "none"
    for params, message in (
        ({"kep": 0.5}, "did you mean 'keep'"),
        ({"keep": 0}, r"keep=0: give the fraction of channels kept, in \(0, 1\]"),
        ({"keep": 0.5, "norm": "l3"}, "norm='l3'"),
    ):
        with pytest.raises(ValueError, match=message):  # at construction: before any run trains
            base.replace(technique={"name": "prune_channels", "params": params})
    with pytest.raises(ValueError, match="runs alone; leave prune.strategy, distill.enabled, pipeline.order"):
        half.replace(prune={"strategy": "random", "compression": 2})
