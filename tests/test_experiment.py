"""Experiment configs: validation naming field paths, JSON round-trip, stable run ids, dotted updates."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from shrinkviz.experiments.experiment import (
    ALIASES,
    DataSpec,
    Experiment,
    FinetuneSpec,
    LatencySpec,
    PipelineSpec,
    PruneSpec,
)

BASE = Experiment(model="tiny_mlp", data="digits")
PRUNED = BASE.replace(strategy="random", compression=4)
PQD = Experiment(
    model="tiny_cnn",
    data="digits",
    prune=PruneSpec("random", 8),
    quant="qat",
    distill={"enabled": True},
    pipeline=PipelineSpec("PQD", (1, 2, 3)),
)


def test_defaults_and_friendly_sections():
    exp = Experiment()
    assert (exp.model, exp.data.name, exp.baseline.recipe, exp.finetune.preset) == (
        "mnistnet",
        "fashion_mnist",
        "default",
        "shrinkbench",
    )
    assert Experiment(model="tiny_mlp", data="digits").data == DataSpec("digits")
    assert Experiment(model="tiny_mlp", data={"name": "digits", "train": 100}).data.train == 100
    assert Experiment(model="tiny_mlp", data="digits", finetune="adam_fast").finetune == FinetuneSpec(
        "adam_fast"
    )


def test_method_is_derived():
    assert BASE.method == "baseline"
    assert PRUNED.method == "prune"
    assert BASE.replace(quantization="qat").method == "quant"
    assert BASE.replace(**{"distill.enabled": True}).method == "distill"
    assert PQD.method == "pipeline"


@pytest.mark.parametrize(
    ("changes", "path", "allowed"),
    [
        ({"prune.compression": 0.5}, "Experiment.prune.compression=0.5", "must be >= 1"),
        ({"compression": 4}, "Experiment.prune.compression=4.0", "needs Experiment.prune.strategy"),
        ({"quant.method": "int4"}, "Experiment.quant.method='int4'", "'none', 'qat', 'ptq'"),
        ({"finetune.preset": "nope"}, "Experiment.finetune.preset='nope'", "'adam_fast'"),
        ({"finetune.epochs": 0}, "Experiment.finetune.epochs=0", "must be >= 1"),
        ({"finetune.epochs": 1.5}, "Experiment.finetune.epochs=1.5", "whole number"),
        ({"finetune.examples": 0}, "Experiment.finetune.examples=0", "must be >= 1"),
        ({"baseline.recipe": "x"}, "Experiment.baseline.recipe='x'", "'default'"),
        ({"baseline.seed": -1}, "Experiment.baseline.seed=-1", "must be >= 0"),
        ({"data.name": "imagenet9"}, "Experiment.data.name='imagenet9'", "'fashion_mnist'"),
        ({"data.train": 0}, "Experiment.data.train=0", "must be >= 1"),
        ({"model": "resnet9000"}, "Experiment.model='resnet9000'", "'tiny_mlp'"),
        ({"seed": True}, "Experiment.seed=True", "whole number"),
        ({"distill.alpha": 1.5}, "Experiment.distill.alpha=1.5", "in [0, 1]"),
        ({"distill.temperature": 0}, "Experiment.distill.temperature=0", "> 0"),
        ({"distill.enabled": "yes"}, "Experiment.distill.enabled='yes'", "True, False"),
        ({"latency.runtimes": ["eager", "tpu"]}, "Experiment.latency.runtimes='tpu'", "'onnxruntime'"),
        ({"latency.threads": 0}, "Experiment.latency.threads=0", "must be >= 1"),
        ({"pipeline.order": "PXD"}, "Experiment.pipeline.order='PXD'", "letters of 'PQDF'"),
        ({"pipeline.order": "PP"}, "Experiment.pipeline.order='PP'", "distinct letters of 'PQDF'"),
    ],
)
def test_invalid_values_name_the_field_path_and_allowed_values(changes, path, allowed):
    with pytest.raises(ValueError) as err:
        BASE.replace(**changes)
    assert str(err.value).startswith(path)
    assert allowed in str(err.value)


def test_strategy_validated_against_the_registry():
    from shrinkviz.techniques.prune import available_strategies

    with pytest.raises(ValueError, match=r"^Experiment\.prune\.strategy='magic'") as err:
        BASE.replace(strategy="magic", compression=2)
    assert {"random", "global_weight", "layer_weight"} <= set(available_strategies())
    assert all(f"'{name}'" in str(err.value) for name in available_strategies())
    for name in available_strategies():
        assert BASE.replace(strategy=name, compression=2).prune.strategy == name


def test_techniques_combine_only_through_a_pipeline_order():
    with pytest.raises(
        ValueError,
        match=r"^Experiment\.pipeline\.order='': prune.strategy='random' and "
        r"quant.method='qat' are set together.*'PQ'",
    ):
        PRUNED.replace(quantization="qat")
    with pytest.raises(ValueError, match=r"^Experiment\.pipeline\.order='PQD': distill.enabled is off"):
        PQD.replace(**{"distill.enabled": False})
    with pytest.raises(
        ValueError, match=r"^Experiment\.pipeline\.epochs=\(20, 40, 40\): needs one entry per stage"
    ):
        PRUNED.replace(quantization="qat", order="PQ")
    with pytest.raises(
        ValueError, match=r"^Experiment\.quant\.method='ptq': the pipeline's Q stage is INT8 QAT"
    ):
        PQD.replace(quantization="ptq")
    single = PRUNED.replace(order="P", stage_epochs=[5])  # one technique through the pipeline's allocation
    assert (single.method, single.pipeline.epochs) == ("pipeline", (5,))
    both = PRUNED.replace(quantization="qat", order="QP", stage_epochs=[3, 4])
    assert (both.method, both.pipeline.epochs) == ("pipeline", (3, 4))


def test_json_round_trip_and_unknown_fields_rejected():
    for exp in (BASE, PRUNED, PQD, PQD.replace(**{"latency.runtimes": [], "data.test": 50})):
        text = exp.to_json()
        back = Experiment.from_json(text)
        assert back == exp and back.run_id == exp.run_id
        assert json.loads(text) == exp.to_dict()
    bad = json.loads(PRUNED.to_json())
    bad["prune"]["sparsity"] = 0.9
    with pytest.raises(
        ValueError, match=r"unknown field\(s\) Experiment\.prune\.sparsity; valid fields: strategy, "
    ):
        Experiment.from_dict(bad)
    with pytest.raises(ValueError, match=r"unknown field\(s\) Experiment\.epochs"):
        Experiment.from_dict({"model": "tiny_mlp", "epochs": 3})
    partial = Experiment.from_dict(
        {"model": "tiny_mlp", "data": {"name": "digits"}, "prune": {"strategy": "random", "compression": 2}}
    )
    assert partial == BASE.replace(strategy="random", compression=2)


def test_run_id_is_stable_normalised_and_sensitive():
    # numerically equal configs hash equally (8 == 8.0, float noise below 12 significant digits)
    a = BASE.replace(strategy="random", compression=8)
    assert a.run_id == BASE.replace(strategy="random", compression=8.0).run_id
    assert a.run_id == BASE.replace(strategy="random", compression=8.000000000000001).run_id
    assert re.fullmatch(r"[0-9a-f]{16}", a.run_id)
    # any change gives a new id
    ids = {
        BASE.run_id,
        a.run_id,
        a.replace(seed=1).run_id,
        a.replace(compression=16).run_id,
        a.replace(**{"latency.rounds": 10}).run_id,
        a.replace(**{"data.train": 10}).run_id,
        a.replace(recipe="adam_lr1e-3").run_id,
    }
    assert len(ids) == 7
    # same id in a fresh interpreter (no dependence on hash seeds or process state)
    code = (
        "from shrinkviz.experiments.experiment import Experiment;"
        f"print(Experiment.from_json({a.to_json()!r}).run_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == a.run_id


def test_run_id_pins_the_canonical_form():
    """The id is sha256 of the sorted-keys compact JSON; pin one value so the form never drifts silently."""
    import hashlib

    canonical = PRUNED.canonical_json()
    assert canonical == json.dumps(json.loads(canonical), sort_keys=True, separators=(",", ":"))
    assert '"compression":4.0' in canonical and '"epochs":[20,40,40]' in canonical
    assert PRUNED.run_id == hashlib.sha256(canonical.encode()).hexdigest()[:16]


def test_dotted_replace_aliases_and_section_updates():
    sub = Experiment(model="tiny_mlp", data={"name": "digits", "train": 64, "test": 32})
    moved = sub.replace(data="fashion_mnist")  # a string sets the section's main field, keeps the rest
    assert moved.data == DataSpec("fashion_mnist", train=64, test=32)
    assert sub.replace(data={"val": 16}).data == DataSpec("digits", train=64, val=16, test=32)
    assert sub.replace(data=DataSpec("digits")).data == DataSpec("digits")
    assert sub.replace(**{"latency.runtimes": ["eager", "compiled"]}).latency == LatencySpec(
        ("eager", "compiled")
    )
    for alias, path in ALIASES.items():
        assert path in Experiment.paths(), alias
    with pytest.raises(
        ValueError,
        match=r"Experiment has no field 'prune\.sparsity'; valid: prune\.strategy, prune\.compression, "
        r"prune\.bias, prune\.score_batches$",
    ):
        sub.replace(**{"prune.sparsity": 0.5})
    assert sub.replace(seed=3).seed == 3 and sub.seed == 0  # frozen: a copy
    with pytest.raises(AttributeError):
        sub.seed = 1  # type: ignore[misc]


def test_factors_and_label():
    assert PQD.factors() == {
        "dataset": "digits",
        "model": "tiny_cnn",
        "baseline_recipe": "default",
        "baseline_seed": 0,
        "method": "pipeline",
        "strategy": "random",
        "compression": 8.0,
        "finetune": "shrinkbench",
        "order": "PQD",
        "stage_epochs": "1/2/3",
        "quantization": "qat",
        "seed": 0,
        "design": "",
    }
    assert PRUNED.factors()["stage_epochs"] == ""  # no pipeline, no stage epochs
    assert PRUNED.label == "tiny_mlp/digits prune random x4 s0"


def test_a_design_label_is_a_column_and_changes_the_id_only_when_set():
    tagged = PRUNED.replace(design="equal-final")
    assert tagged.factors()["design"] == "equal-final" and tagged.run_id != PRUNED.run_id
    assert "design" not in PRUNED.to_dict() and Experiment.from_json(tagged.to_json()) == tagged
    with pytest.raises(ValueError, match="Experiment.design"):
        PRUNED.replace(design="no spaces please")


def test_finetune_precision_keeps_fp32_ids_labels_bf16_runs_and_refuses_bf16_qat():
    assert "precision" not in PRUNED.canonical_json()  # runs stored before the field keep their ids
    bf16 = PRUNED.replace(finetune_precision="bf16")
    assert bf16.run_id != PRUNED.run_id and bf16.finetune.train_config().precision == "bf16"
    assert bf16.factors()["finetune"] == "shrinkbench+bf16" and PRUNED.factors()["finetune"] == "shrinkbench"
    assert Experiment.from_json(bf16.to_json()) == bf16
    with pytest.raises(
        ValueError, match=r"Experiment.finetune.precision='fp16'.*allowed values: 'fp32', 'bf16'"
    ):
        PRUNED.replace(finetune_precision="fp16")
    with pytest.raises(ValueError, match="finetune.precision='bf16' cannot train INT8 QAT"):
        BASE.replace(finetune_precision="bf16", quantization="qat")


def test_baseline_precision_names_its_own_baseline():
    bf16 = PRUNED.replace(baseline_precision="bf16")
    assert "precision" not in json.loads(PRUNED.canonical_json())["baseline"]
    assert bf16.run_id != PRUNED.run_id and bf16.factors()["baseline_recipe"] == "default+bf16"
    with pytest.raises(ValueError, match=r"Experiment.baseline.precision='half'"):
        PRUNED.replace(baseline_precision="half")


def test_a_bf16_run_records_its_precision_and_reports_float32_accuracy():
    from shrinkviz.experiments.runner import run

    exp = Experiment(
        model="tiny_cnn",
        data={"name": "digits", "train": 256, "val": 64, "test": 64},
        baseline={"epochs": 1, "precision": "bf16"},
        prune={"strategy": "global_weight", "compression": 4},
        finetune={"preset": "adam_fast", "epochs": 1, "precision": "bf16"},
        latency={"runtimes": []},
    )
    row, history, _ = run(exp)
    assert (row["finetune"], row["baseline_recipe"]) == ("adam_fast+bf16", "default+bf16")
    assert json.loads(row["config_json"])["finetune"]["precision"] == "bf16"
    assert row["val_top1"] == history[-1]["val_top1"] and 0 <= row["top1"] <= 1
