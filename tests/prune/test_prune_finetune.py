"""The finetune verb: a thin wrapper over the one loop that keeps pruned zeros and standard presets."""

from __future__ import annotations

import pytest
import torch

import shrinkviz as sv
from shrinkviz.loop.train import TrainConfig
from shrinkviz.models import create_model
from shrinkviz.techniques.finetune import finetune
from shrinkviz.techniques.prune import get_masks, prune


def test_finetune_a_pruned_model_by_preset_name_and_dataset_name(monkeypatch):
    from shrinkviz.data import load_dataset
    from shrinkviz.loop.train import PRESETS

    small = load_dataset("digits").subset(train=64, val=32, test=32)
    monkeypatch.setitem(PRESETS, "shrinkbench", PRESETS["shrinkbench"].replace(epochs=1, augment="none"))
    monkeypatch.setattr(
        "shrinkviz.data.datasets.load_dataset", lambda name: small if name == "digits" else None
    )
    model = prune(
        create_model("tiny_cnn", dataset=small, seed=0), strategy="layer_weight", compression=4
    ).model
    masks = get_masks(model)
    before = {n: model.get_parameter(n).detach().clone() for n in masks}
    history = sv.finetune(model, "digits", progress=False).history  # default cfg: the "shrinkbench" preset
    assert [row["stage"] for row in history] == ["finetune"]
    assert history[0]["lr"] == 1e-3 and "sparsity" in history[0]
    for name, mask in masks.items():
        weight = model.get_parameter(name)
        assert int(weight[~mask].count_nonzero()) == 0
        assert not torch.equal(weight[mask], before[name][mask])


def test_finetune_rejects_unknown_presets_and_configs(digits):
    model = create_model("tiny_mlp", dataset=digits)
    with pytest.raises(ValueError, match="unknown training preset"):
        finetune(model, digits, "shrinkbench_fast")
    with pytest.raises(TypeError, match="TrainConfig"):
        finetune(model, digits, {"epochs": 1})
    assert (
        finetune(
            model,
            digits.subset(train=32, val=16),
            TrainConfig.preset("adam_fast").replace(epochs=1),
            progress=False,
        ).history[0]["epoch"]
        == 1
    )
