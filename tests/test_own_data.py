"""Datasets of one's own: an ImageFolder from an Experiment, and a default recipe chosen by data size."""

from __future__ import annotations

import pytest
import torch

import shrinkviz as sv
from shrinkviz.experiments.experiment import Experiment
from shrinkviz.experiments.runner import load_baseline
from shrinkviz.experiments.store import Store
from shrinkviz.experiments.sweep import sweep
from shrinkviz.loop.zoo import DEFAULT_BY_SIZE, recipe_config


@pytest.fixture
def folder(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("val", 4)):
        for cls, channel in (("red", 0), ("blue", 2)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 60, (20, 20, 3), dtype=torch.uint8, generator=g)
                pixels[..., channel] = 200
                Image.fromarray(pixels.numpy()).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


def test_path_is_serialised_only_when_set():
    plain = Experiment(model="tiny_mlp", data={"name": "digits"})
    assert "path" not in plain.to_dict()["data"]
    assert Experiment.from_json(plain.to_json()).run_id == plain.run_id
    own = Experiment(model="tiny_cnn", data={"name": "imagefolder", "path": "/data/pets"})
    assert own.to_dict()["data"]["path"] == "/data/pets" and own.run_id != plain.run_id
    assert Experiment.from_json(own.to_json()) == own


def test_bad_data_paths_are_one_line_errors():
    with pytest.raises(ValueError, match=r"Experiment\.data\.path='': dataset 'imagefolder' needs path="):
        Experiment(model="tiny_cnn", data={"name": "imagefolder"})
    with pytest.raises(ValueError, match=r"only name='imagefolder' takes a path, not 'digits'"):
        Experiment(model="tiny_cnn", data={"name": "digits", "path": "/x"})


def test_an_image_folder_experiment_runs_with_the_size_rule(folder, tmp_path):
    exp = Experiment(
        model="tiny_cnn",
        data={"name": "imagefolder", "path": str(folder)},
        prune={"strategy": "layer_weight", "compression": 2},
        latency={"runtimes": []},
    )
    res = sweep(exp, store=Store(tmp_path / "store"), progress=False)
    assert res.runs[["status", "compression_ratio"]].values.tolist() == [["ok", pytest.approx(2.0)]]
    # the baseline was trained with the default recipe of a dataset this small: the smallest size class
    manifest = load_baseline(exp).shrinkviz_manifest
    assert manifest["config"]["dataset"] == f"imagefolder:{folder.name}"
    assert manifest["config"]["train_config"]["epochs"] == DEFAULT_BY_SIZE[0][1]


@pytest.mark.parametrize(
    ("n_train", "epochs", "batch"),
    [(1, 40, 64), (2_000, 40, 64), (2_001, 15, 128), (20_000, 15, 128), (20_001, 6, 128)],
)
def test_default_recipe_by_training_set_size(n_train, epochs, batch):
    cfg = recipe_config("default", "my_registered_set", n_train=n_train)
    assert (cfg.optimizer, cfg.epochs, cfg.batch_size) == ("adam", epochs, batch)


def test_named_datasets_keep_their_recipes_and_unknown_size_is_refused():
    assert (
        recipe_config("default", "cifar10").optimizer == "sgd"
        and recipe_config("default", "cifar10").epochs == 30
    )
    assert recipe_config("default", "fashion_mnist").epochs == 6
    with pytest.raises(ValueError, match="depends on its size: pass n_train="):
        recipe_config("default", "my_registered_set")


def test_pretrained_on_a_registered_dataset_uses_the_size_rule():
    def tiny(val_fraction=0.1, **_):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (60, 1, 8, 8), dtype=torch.uint8, generator=g)
        return sv.data.from_tensors("own_small", x[:50], torch.arange(50) % 2, x[50:], torch.arange(10) % 2)

    with sv.data.datasets.DATASETS.scoped():
        sv.data.register_dataset("own_small", tiny)
        model = sv.pretrained("tiny_mlp", "own_small", progress=False)
    cfg = model.shrinkviz_manifest["config"]["train_config"]
    assert (cfg["optimizer"], cfg["epochs"], cfg["batch_size"]) == ("adam", 40, 64)
    assert len(model.shrinkviz_manifest["history"]) == 40
