"""Datasets as tensors: registry, resolution of official files, batched augmentation.

Example:
    >>> from shrinkviz.data import load_dataset, available_datasets
    >>> "fashion_mnist" in available_datasets()
    True
"""

from shrinkviz.data.augment import AUGMENTATIONS, Normalizer, batches
from shrinkviz.data.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    Dataset,
    Split,
    as_dataset,
    available_datasets,
    from_tensors,
    load_dataset,
    register_dataset,
)
from shrinkviz.data.sources import DatasetNotFoundError

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DEFAULT_DATASET",
    "Dataset",
    "DatasetNotFoundError",
    "Normalizer",
    "Split",
    "as_dataset",
    "available_datasets",
    "from_tensors",
    "batches",
    "load_dataset",
    "register_dataset",
]
