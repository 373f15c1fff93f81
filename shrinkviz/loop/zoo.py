"""Pretrained baselines: load from ``data_cache/checkpoints/`` when present, else train with a named
recipe and save, with a JSON manifest (full config, metrics, sha256, versions) beside each checkpoint.

Loading verifies the checkpoint's sha256 against its manifest and uses ``torch.load(weights_only=True)``;
a corrupt or mismatched file raises :class:`CheckpointError` naming the way out
(``retrain=True``), never silent use. Different seeds or recipes are distinct baselines.

Example:
    >>> import shrinkviz as sv
    >>> model = sv.pretrained("tiny_mlp", "digits", recipe="default", seed=0, progress=False)
    >>> model.shrinkviz_manifest["metrics"]["test_top1"] > 0.5
    True
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from shrinkviz.core.io import atomic_path, atomic_write_text, cache_root, sha256_file
from shrinkviz.core.version import __version__
from shrinkviz.data import Dataset, Normalizer, load_dataset
from shrinkviz.loop.train import TrainConfig, evaluate, fit, validate
from shrinkviz.models import ShrinkNet, create_model

_MNIST_LIKE = ("fashion_mnist", "mnist")
_CIFAR_LIKE = ("cifar10", "cifar100")
KNOWN_DEFAULTS = (*_MNIST_LIKE, "digits", *_CIFAR_LIKE)
"""Datasets whose ``default`` recipe is fixed by name; any other dataset's depends on its size."""

DEFAULT_BY_SIZE = ((2_000, 40, 64), (20_000, 15, 128), (math.inf, 6, 128))
"""``(max training examples, epochs, batch size)`` of the ``default`` recipe (Adam, cosine) for a dataset
not in :data:`KNOWN_DEFAULTS`: the first row whose bound the training split does not exceed. Small
datasets get more passes (as digits: 40 epochs of 1.4k images), large ones fewer (as MNIST: 6 of 54k)."""


def recipe_config(recipe: str | TrainConfig, dataset: str, n_train: int | None = None) -> TrainConfig:
    """The training config a recipe name stands for on a dataset.

    ``default`` is the recipe the demo uses: Adam with a cosine schedule, 6 epochs on MNIST-like data
    (>= 90% test top-1 with MnistNet on Fashion-MNIST), 40 on digits, SGD 30 epochs on CIFAR; on any other
    dataset (registered, ``imagefolder``) Adam with epochs and batch by the size of its training split
    (:data:`DEFAULT_BY_SIZE`). Any name of ``shrinkviz.loop.train.PRESETS`` is also a recipe, and a
    ``TrainConfig`` may be given directly.

    Args:
        recipe: ``default``, a preset name, or a TrainConfig.
        dataset: the dataset's name.
        n_train: training examples (needed for ``default`` on a dataset outside :data:`KNOWN_DEFAULTS`).

    Example:
        >>> c = recipe_config("default", "imagefolder:flowers", n_train=800)
        >>> c.optimizer, c.epochs, c.batch_size
        ('adam', 40, 64)
        >>> recipe_config("default", "my_big_set", n_train=100_000).epochs
        6
    """
    if isinstance(recipe, TrainConfig):
        return recipe
    if recipe == "default":
        if dataset in _MNIST_LIKE:
            return TrainConfig.preset("adam_fast").replace(epochs=6)
        if dataset == "digits":
            return TrainConfig.preset("adam_fast").replace(epochs=40, batch_size=64)
        if dataset in _CIFAR_LIKE:
            return TrainConfig.preset("cifar_sgd").replace(epochs=30)
        if n_train is None or n_train < 1:
            raise ValueError(
                f"the default recipe of dataset {dataset!r} depends on its size: pass n_train= (its training "
                "examples) or a recipe name / TrainConfig"
            )
        epochs, batch = next((e, b) for limit, e, b in DEFAULT_BY_SIZE if n_train <= limit)
        return TrainConfig.preset("adam_fast").replace(epochs=epochs, batch_size=batch)
    return TrainConfig.preset(recipe)


class CheckpointError(RuntimeError):
    """A cached checkpoint is corrupt or does not match its manifest."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so parallel sweep workers train a shared baseline once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def baseline_spec(
    model: str,
    dataset: str,
    recipe: str | TrainConfig = "default",
    seed: int = 0,
    epochs: int | None = None,
    subset: tuple[int, int, int] | None = None,
    n_train: int | None = None,
    val_fraction: float = 0.1,
    precision: str | None = None,
) -> dict[str, Any]:
    """The full config that identifies a baseline (and names its checkpoint); ``val_fraction`` enters it
    only when not the default 0.1, and the training precision only when not ``fp32``
    (``TrainConfig.to_dict``), so existing checkpoints keep their names."""
    cfg = recipe_config(recipe, dataset, n_train)
    if epochs is not None:
        cfg = cfg.replace(epochs=epochs)
    if precision is not None:
        cfg = cfg.replace(precision=precision)
    name = recipe if isinstance(recipe, str) else "custom"
    spec = {
        "model": model,
        "dataset": dataset,
        "recipe": name,
        "train_config": cfg.to_dict(),
        "seed": seed,
        "subset": list(subset) if subset else None,
    }
    if val_fraction != 0.1:
        spec["val_fraction"] = val_fraction
    return spec


def checkpoint_paths(spec: dict[str, Any], cache: Path | None = None) -> tuple[Path, Path]:
    """(weights path, manifest path) of a baseline spec."""
    key = hashlib.sha256(_canonical(spec).encode()).hexdigest()[:12]
    stem = f"{spec['model']}-{spec['dataset']}-{spec['recipe']}-s{spec['seed']}-{key}"
    folder = (cache or cache_root()) / "checkpoints"
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def _load(spec: dict[str, Any], weights: Path, manifest_path: Path) -> ShrinkNet:
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"manifest {manifest_path} is unreadable ({exc}); "
            "retrain with shrinkviz.pretrained(..., retrain=True)"
        ) from exc
    if manifest.get("config") != spec:
        raise CheckpointError(
            f"manifest {manifest_path} describes another baseline ({manifest.get('config')}); "
            "retrain with shrinkviz.pretrained(..., retrain=True)"
        )
    actual = sha256_file(weights)
    if actual != manifest.get("sha256"):
        raise CheckpointError(
            f"checkpoint {weights} is corrupt: sha256 {actual} != manifest "
            f"{manifest.get('sha256')}; retrain with shrinkviz.pretrained(..., retrain=True)"
        )
    model = create_model(
        spec["model"], input_shape=tuple(manifest["input_shape"]), num_classes=manifest["num_classes"]
    )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unpickling/shape error means the file is unusable
        raise CheckpointError(
            f"checkpoint {weights} does not load into {spec['model']}: {exc}; "
            "retrain with shrinkviz.pretrained(..., retrain=True)"
        ) from exc
    model.shrinkviz_manifest = manifest
    return model.eval()


def _train_and_save(
    spec: dict[str, Any], data: Dataset, weights: Path, manifest_path: Path, progress: bool
) -> ShrinkNet:
    cfg = TrainConfig.from_dict(spec["train_config"])
    model = create_model(spec["model"], dataset=data, seed=spec["seed"])
    started = time.perf_counter()
    history = fit(model, data, cfg, seed=spec["seed"], stage="pretrain", progress=progress)
    train_s = time.perf_counter() - started
    model.cpu().eval()
    normalize = Normalizer(data.mean, data.std)
    test = evaluate(model, data.test, normalize)
    val = validate(model, data)  # fit's last validation when it handed back that very model
    with atomic_path(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    manifest = {
        "config": spec,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "metrics": {
            "test_top1": test["top1"],
            "test_top5": test["top5"],
            "test_loss": test["loss"],
            "val_top1": val["top1"],
            "train_s": train_s,
        },
        "history": [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in history
        ],  # strict JSON: NaN (no KD loss) becomes null
        "sha256": sha256_file(weights),
        "file": weights.name,
        "shrinkviz_version": __version__,
        "torch_version": torch.__version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))  # the manifest publishes the pair
    model.shrinkviz_manifest = manifest
    return model


def pretrained(
    model: str,
    dataset: str | Dataset = "fashion_mnist",
    recipe: str | TrainConfig = "default",
    seed: int = 0,
    *,
    epochs: int | None = None,
    subset: tuple[int, int, int] | None = None,
    retrain: bool = False,
    cache: str | Path | None = None,
    progress: bool = True,
    val_fraction: float = 0.1,
    precision: str | None = None,
) -> ShrinkNet:
    """Load a pretrained baseline from the cache, or train it with ``recipe`` and cache it.

    Args:
        model: architecture registry name.
        dataset: dataset registry name (or a loaded ``Dataset`` of that name).
        recipe: ``default``, a name of ``shrinkviz.loop.train.PRESETS``, or a ``TrainConfig``.
        seed: initialisation and training seed; each seed is a distinct baseline.
        epochs: override the recipe's epoch count (smoke profiles use this).
        subset: (train, val, test) sizes to train on the first examples of each split.
        retrain: ignore and overwrite a cached checkpoint (the way out of a CheckpointError).
        cache: cache root (default ``shrinkviz.core.io.cache_root()``).
        progress: show training progress.
        val_fraction: the validation split of a dataset given by name (``load_dataset``; 0 is ShrinkBench's:
            train on the whole official train split, validate on the test split).
        precision: ``fp32`` or ``bf16`` training steps (``TrainConfig.precision``; default: the recipe's,
            ``fp32`` for every preset). A bf16 baseline is a different baseline, with its own checkpoint.

    Returns:
        The model in eval mode on the CPU, with its manifest in ``model.shrinkviz_manifest``.

    Raises:
        CheckpointError: the cached checkpoint is corrupt or mismatched (and ``retrain`` is False).
    """
    dataset_name = dataset.name if isinstance(dataset, Dataset) else dataset
    if isinstance(dataset, Dataset) and subset is None:  # the object may itself be a subset: key on its sizes
        subset = (len(dataset.train), len(dataset.val), len(dataset.test))
    n_train = None
    if recipe == "default" and dataset_name not in KNOWN_DEFAULTS:  # the default recipe depends on the size
        full = (
            dataset if isinstance(dataset, Dataset) else load_dataset(dataset_name, val_fraction=val_fraction)
        )
        n_train = len((full.subset(*subset) if subset else full).train)
    spec = baseline_spec(model, dataset_name, recipe, seed, epochs, subset, n_train, val_fraction, precision)
    weights, manifest_path = checkpoint_paths(spec, Path(cache) if cache else None)
    if manifest_path.is_file() and weights.is_file() and not retrain:
        return _load(spec, weights, manifest_path)
    with _locked(weights.with_suffix(".lock")):
        if manifest_path.is_file() and weights.is_file() and not retrain:  # another process finished it
            return _load(spec, weights, manifest_path)
        data = (
            dataset if isinstance(dataset, Dataset) else load_dataset(dataset_name, val_fraction=val_fraction)
        )
        if subset:
            data = data.subset(*subset)
        return _train_and_save(spec, data, weights, manifest_path, progress)
