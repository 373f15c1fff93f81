"""Fixtures of the pruning tests."""

from __future__ import annotations

import pytest
from prune_helpers import make_dataset

from shrinkviz.data import Dataset


@pytest.fixture(scope="session")
def synthetic():
    """``synthetic(shape)``: a cached random uint8 dataset of that image shape (96 examples per split)."""
    cache: dict[tuple[int, int, int], Dataset] = {}

    def get(shape: tuple[int, int, int]) -> Dataset:
        if shape not in cache:
            cache[shape] = make_dataset(shape)
        return cache[shape]

    return get
