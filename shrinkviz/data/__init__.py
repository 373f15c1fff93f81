"""Datasets as tensors: registry, resolution of official files, batched augmentation.

Example:
    >>> from shrinkviz.data import load_dataset, available_datasets
    >>> "fashion_mnist" in available_datasets()
    True
"""

from shrinkviz.data.augment import AUGMENTATIONS, Normalizer, batches
from shrinkviz.data.datasets import DEFAULT_DATASET, Dataset, Split, available_datasets, load_dataset
from shrinkviz.data.sources import DatasetNotFoundError

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_DATASET",
    "Dataset",
    "DatasetNotFoundError",
    "Normalizer",
    "Split",
    "available_datasets",
    "batches",
    "load_dataset",
]
