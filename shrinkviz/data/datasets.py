"""The dataset registry: whole splits held as uint8 tensors, with a fixed seeded validation split.

Example:
    >>> from shrinkviz.data import load_dataset
    >>> ds = load_dataset("digits")
    >>> ds.input_shape, ds.num_classes, len(ds.train) + len(ds.val) + len(ds.test)
    ((1, 8, 8), 10, 1797)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shrinkviz.core.registry import Registry, unknown_name
from shrinkviz.data import formats, sources, verify
from shrinkviz.data.splits import VAL_SPLIT_SEED, Split, carve_validation, channel_stats


@dataclass(frozen=True)
class Dataset:
    """A dataset as tensors: train / val (carved from the official train split) / test.

    The test split is for reporting only; model selection uses ``val``. Loaded with ``val_fraction=0``
    (ShrinkBench's split) ``val`` *is* ``test`` (:attr:`val_is_test`): every validation figure, and any
    selection on it, is then on the test set.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    augment: str = "none"
    """The standard training augmentation of this dataset (what ``TrainConfig(augment="auto")`` uses):
    pad-and-crop + flip for natural images (CIFAR, image folders), none for digits and clothing."""

    @property
    def val_is_test(self) -> bool:
        """True when the validation split is the test split (``val_fraction=0``, ShrinkBench's split)."""
        return self.val is self.test

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def subset(self, train: int | None = None, val: int | None = None, test: int | None = None) -> Dataset:
        """The first ``train`` / ``val`` / ``test`` examples of each split (normalisation unchanged).

        Example:
            >>> from shrinkviz.data import load_dataset
            >>> len(load_dataset("digits").subset(train=100).train)
            100
        """
        for field_name, n in (("train", train), ("val", val), ("test", test)):
            if n is not None and n < 1:
                raise ValueError(f"subset {field_name}={n}: must be a positive count or None")
        return replace(self, train=self.train.head(train), val=self.val.head(val), test=self.test.head(test))


def _assemble(
    name: str,
    train_x,
    train_y,
    test_x,
    test_y,
    num_classes: int,
    val_fraction: float,
    classes: tuple[str, ...] = (),
    augment: str = "none",
    owned: bool = False,
) -> Dataset:
    test = Split(test_x, test_y)
    if val_fraction == 0:  # ShrinkBench's split: all training images, the test split validates
        train, val = Split(train_x, train_y), test
    else:
        train, val = carve_validation(train_x, train_y, val_fraction, owned)
    mean, std = channel_stats(train.images)
    return Dataset(name, train, val, test, num_classes, mean, std, classes, augment)


def _load_idx(name: str, cache: Path | None, download: bool, val_fraction: float, classes) -> Dataset:
    root = sources.resolve(name, cache, download)
    read = lambda f: formats.read_idx(root / f)  # noqa: E731
    train_x, train_y = read("train-images-idx3-ubyte.gz"), read("train-labels-idx1-ubyte.gz")
    test_x, test_y = read("t10k-images-idx3-ubyte.gz"), read("t10k-labels-idx1-ubyte.gz")
    return _assemble(
        name,
        train_x.unsqueeze(1),
        train_y.long(),
        test_x.unsqueeze(1),
        test_y.long(),
        10,
        val_fraction,
        classes,
        owned=True,  # read_idx's own tensors
    )


def _load_cifar(name: str, cache: Path | None, download: bool, val_fraction: float) -> Dataset:
    root = sources.resolve(name, cache, download)
    if name == "cifar10":
        folder, key, n_classes = root / "cifar-10-batches-py", "labels", 10
        train_parts = [formats.read_cifar_batch(folder / f"data_batch_{i}", key) for i in range(1, 6)]
        test_x, test_y = formats.read_cifar_batch(folder / "test_batch", key)
    else:
        folder, key, n_classes = root / "cifar-100-python", "fine_labels", 100
        train_parts = [formats.read_cifar_batch(folder / "train", key)]
        test_x, test_y = formats.read_cifar_batch(folder / "test", key)
    train_x = torch.cat([p[0] for p in train_parts])
    train_y = torch.cat([p[1] for p in train_parts])
    return _assemble(
        name, train_x, train_y, test_x, test_y, n_classes, val_fraction, augment="crop_flip", owned=True
    )


def _load_digits(val_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    # digits has no official test split: hold out a fixed, seeded 20% once.
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED + 1))
    n_test = int(round(0.2 * len(labels)))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    return _assemble(
        "digits",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        10,
        val_fraction,
        tuple(str(i) for i in range(10)),
    )


def _load_image_folder(path: str | Path, image_size: int, val_fraction: float) -> Dataset:
    """ImageNet-style folder: ``path/train/<class>/*`` and ``path/val/<class>/*`` (or ``test``), images
    resized to ``image_size`` squares and held in memory (suits ImageNet subsets such as Imagenette, not
    the full 1.2M-image set). A ``path/SHA256SUMS`` manifest, when present, is checked first."""
    from PIL import Image

    root = Path(path)
    test_dir = next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise sources.DatasetNotFoundError(
            f"image folder {root} must contain train/<class>/ and val/<class>/ (or test/<class>/) folders"
        )
    classes = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if not classes:
        raise sources.DatasetNotFoundError(f"{root / 'train'} has no class folders")
    verify.verify_manifest(root)  # an optional SHA256SUMS file lists digests of the folder's files

    def read(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for label, cls in enumerate(classes):
            for file in sorted((split_dir / cls).glob("*")) if (split_dir / cls).is_dir() else []:
                with Image.open(file) as img:
                    img = img.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
                    images.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
                    labels.append(label)
        if not images:
            raise sources.DatasetNotFoundError(f"no images found under {split_dir}")
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)

    train_x, train_y = read(root / "train")
    test_x, test_y = read(test_dir)
    return _assemble(
        f"imagefolder:{root.name}",
        train_x,
        train_y,
        test_x,
        test_y,
        len(classes),
        val_fraction,
        classes,
        augment="crop_flip",
    )


_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")
"""Dataset loaders by name: ``loader(*, cache, download, val_fraction) -> Dataset`` (see
:func:`register_dataset`). ``imagefolder`` is not an entry: it needs a ``path``."""


def register_dataset(
    name: str, loader: Callable[..., Dataset] | None = None, *, overwrite: bool = False
) -> Any:
    """Register a dataset loader under ``name`` (usable as a decorator); it is then available to
    :func:`load_dataset`, experiments, sweeps and the CLI.

    The loader is called with the keyword arguments ``cache`` (Path or None), ``download`` (bool) and
    ``val_fraction`` (float); accept ``**kwargs`` for the ones you do not use. Build its result with
    :func:`from_tensors`, which carves the seeded validation split and the normalisation statistics.

    Example:
        >>> @register_dataset("example_noise", overwrite=True)
        ... def noise(val_fraction=0.1, **_):
        ...     g = torch.Generator().manual_seed(0)
        ...     x = torch.randint(0, 256, (60, 1, 4, 4), generator=g, dtype=torch.uint8)
        ...     return from_tensors("example_noise", x[:50], torch.arange(50) % 2, x[50:], torch.arange(10) % 2,
        ...                         val_fraction=val_fraction)
        >>> ds = load_dataset("example_noise")
        >>> ds.input_shape, len(ds.train), len(ds.val), len(ds.test)
        ((1, 4, 4), 45, 5, 10)
        >>> DATASETS.unregister("example_noise")
    """
    if loader is None:
        return lambda fn: register_dataset(name, fn, overwrite=overwrite)
    if name == "imagefolder":
        raise ValueError("dataset name 'imagefolder' is reserved for load_dataset('imagefolder', path=...)")
    if not callable(loader):
        raise TypeError(f"dataset {name!r}: loader must be callable(*, cache, download, val_fraction)")
    DATASETS.register(name, loader, overwrite=overwrite)
    _load_cached.cache_clear()
    return loader


def from_tensors(
    name: str,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    classes: tuple[str, ...] = (),
    augment: str = "none",
    val_fraction: float = 0.1,
) -> Dataset:
    """A :class:`Dataset` from uint8 image tensors (N x C x H x W) and integer labels: the validation split
    is carved from the training images with the fixed seed, the normalisation statistics computed on what
    remains.

    Raises:
        ValueError: images that are not 4-d uint8, or labels that do not match them.
    """
    for what, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"{name}: {what} images must be a uint8 tensor N x C x H x W, got "
                f"{images.dtype} of shape {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"{name}: {what} labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
    classes_n = (
        num_classes if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    )
    return _assemble(
        name,
        train_images,
        train_labels.long(),
        test_images,
        test_labels.long(),
        classes_n,
        val_fraction,
        tuple(classes),
        augment=augment,
    )


DEFAULT_DATASET = "fashion_mnist"


def available_datasets() -> list[str]:
    """Registry names accepted by :func:`load_dataset` (plus ``imagefolder`` with a ``path``)."""
    return [*DATASETS.names(), "imagefolder"]


def load_dataset(
    name: str = DEFAULT_DATASET,
    *,
    path: str | Path | None = None,
    image_size: int = 64,
    cache: str | Path | None = None,
    download: bool = True,
    val_fraction: float = 0.1,
) -> Dataset:
    """Load a registered dataset as tensors (cached in memory per process).

    Args:
        name: one of :func:`available_datasets`.
        path: folder of an ``imagefolder`` dataset.
        image_size: side of the square images of an ``imagefolder`` dataset.
        cache: cache root (default ``shrinkviz.core.io.cache_root()``).
        download: try official mirrors when files are missing locally.
        val_fraction: share of the official train split held out (fixed seed) for validation; 0 is
            ShrinkBench's split: train on the whole official train split and validate on the test split
            (``Dataset.val_is_test``; selection on it is selection on the test set, optimistic).

    Raises:
        ValueError: unknown name (listing the valid ones) or bad fraction.
        DatasetNotFoundError: files missing offline (naming the three ways to provide them).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(
            f"val_fraction={val_fraction}: must be in [0, 1) (0: validate on the test split, as ShrinkBench)"
        )
    if name == "imagefolder":
        if path is None:
            raise ValueError("dataset 'imagefolder' needs path=<folder with train/ and val/ subfolders>")
        return _load_cached_folder(str(Path(path).resolve()), image_size, val_fraction)
    if name not in DATASETS:
        raise unknown_name("dataset", name, available_datasets())
    return _load_cached(name, str(cache) if cache else None, download, val_fraction)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, cache: str | None, download: bool, val_fraction: float) -> Dataset:
    dataset = DATASETS.get(name)(
        cache=Path(cache) if cache else None, download=download, val_fraction=val_fraction
    )
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"the loader of dataset {name!r} returned {type(dataset).__name__}, not a Dataset; "
            "build it with shrinkviz.data.from_tensors"
        )
    return dataset


def as_dataset(data: Dataset | str | None, *, optional: bool = False) -> Dataset | None:
    """A Dataset from a Dataset or a registry name (``None`` passes through when ``optional``): what every
    verb taking ``data`` accepts.

    Example:
        >>> as_dataset("digits").name, as_dataset(None, optional=True)
        ('digits', None)
    """
    if isinstance(data, Dataset) or (data is None and optional):
        return data
    if isinstance(data, str):
        return load_dataset(data)
    raise TypeError(f"data must be a shrinkviz.data.Dataset or a dataset name, got {type(data).__name__}")


@functools.lru_cache(maxsize=2)
def _load_cached_folder(path: str, image_size: int, val_fraction: float) -> Dataset:
    return _load_image_folder(path, image_size, val_fraction)


register_dataset("digits", lambda *, val_fraction, **_: _load_digits(val_fraction))
register_dataset(
    "fashion_mnist",
    lambda *, cache, download, val_fraction: _load_idx(
        "fashion_mnist", cache, download, val_fraction, _FASHION_CLASSES
    ),
)
register_dataset(
    "mnist",
    lambda *, cache, download, val_fraction: _load_idx(
        "mnist", cache, download, val_fraction, tuple(str(i) for i in range(10))
    ),
)
register_dataset(
    "cifar10", lambda *, cache, download, val_fraction: _load_cifar("cifar10", cache, download, val_fraction)
)
register_dataset(
    "cifar100",
    lambda *, cache, download, val_fraction: _load_cifar("cifar100", cache, download, val_fraction),
)
