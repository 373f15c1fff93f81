from __future__ import annotations

import json

import pytest
import torch

import shrinkviz as sv
from shrinkviz.core.io import sha256_file
from shrinkviz.data import Normalizer, load_dataset
from shrinkviz.loop import zoo
from shrinkviz.loop.train import evaluate
from shrinkviz.loop.zoo import CheckpointError, baseline_spec, checkpoint_paths

KW = dict(epochs=2, subset=(400, 100, 200), progress=False)


def _same_weights(a, b) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    first = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    weights, manifest_path = checkpoint_paths(
        baseline_spec("tiny_mlp", "digits", "default", 0, 2, (400, 100, 200)), tmp_path
    )
    assert weights.is_file() and manifest_path.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached baseline was trained again")

    monkeypatch.setattr(zoo, "fit", no_training)
    second = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    assert _same_weights(first, second) and not second.training


def test_manifest_records_config_metrics_hash_and_versions(tmp_path):
    model = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    manifest = json.loads(next(tmp_path.glob("checkpoints/*.json")).read_text())
    assert manifest == model.shrinkviz_manifest
    assert manifest["config"]["train_config"]["epochs"] == 2 and manifest["config"]["subset"] == [
        400,
        100,
        200,
    ]
    assert set(manifest["metrics"]) >= {"test_top1", "test_top5", "val_top1"}
    data = load_dataset("digits").subset(400, 100, 200)
    test = evaluate(model, data.test, Normalizer(data.mean, data.std))
    assert (
        manifest["metrics"]["test_top1"] == test["top1"] and manifest["metrics"]["test_loss"] == test["loss"]
    )
    assert manifest["torch_version"] == torch.__version__ and manifest["shrinkviz_version"] == sv.__version__
    assert len(manifest["sha256"]) == 64 and len(manifest["history"]) == 2


def test_seeds_and_recipes_are_distinct_baselines(tmp_path):
    a = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    b = sv.pretrained("tiny_mlp", "digits", seed=1, cache=tmp_path, **KW)
    c = sv.pretrained("tiny_mlp", "digits", recipe="adam_lr1e-4", seed=0, cache=tmp_path, **KW)
    assert not _same_weights(a, b) and not _same_weights(a, c)
    assert len(list(tmp_path.glob("checkpoints/*.pt"))) == 3


def test_corrupt_checkpoint_is_refused_then_retrained_on_request(tmp_path):
    sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    weights = next(tmp_path.glob("checkpoints/*.pt"))
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt: sha256 .* retrain=True"):
        sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    model = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, retrain=True, **KW)
    assert model.shrinkviz_manifest["sha256"] == sha256_file(weights)  # the rewritten, intact file
    assert _same_weights(sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW), model)


def test_mismatched_manifest_is_refused(tmp_path):
    sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    manifest_path = next(tmp_path.glob("checkpoints/*.json"))
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["seed"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="describes another baseline"):
        sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)


def test_checkpoints_load_with_weights_only(tmp_path):
    sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    state = torch.load(next(tmp_path.glob("checkpoints/*.pt")), weights_only=True)
    assert "classifier.weight" in state


def test_a_bf16_baseline_is_its_own_checkpoint_and_fp32_keeps_the_old_name(tmp_path):
    fp32 = baseline_spec("tiny_mlp", "digits", seed=0, epochs=2, subset=(400, 100, 200))
    assert (
        baseline_spec("tiny_mlp", "digits", seed=0, epochs=2, subset=(400, 100, 200), precision="fp32")
        == fp32
    )
    assert "precision" not in fp32["train_config"]  # checkpoints named before precision existed still load
    a = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, **KW)
    b = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, precision="bf16", **KW)
    assert not _same_weights(a, b) and len(list(tmp_path.glob("checkpoints/*.pt"))) == 2
    assert b.shrinkviz_manifest["config"]["train_config"]["precision"] == "bf16"
    again = sv.pretrained("tiny_mlp", "digits", seed=0, cache=tmp_path, precision="bf16", **KW)
    assert _same_weights(again, b)
