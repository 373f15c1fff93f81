"""Shared fixtures. Every test session gets its own cache root, so tests never read or write the
user's data_cache (datasets still resolve to the system package, e.g. Debian's Fashion-MNIST)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shrinkviz_cache")
    old = os.environ.get("SHRINKVIZ_CACHE")
    os.environ["SHRINKVIZ_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("SHRINKVIZ_CACHE", None)
    else:
        os.environ["SHRINKVIZ_CACHE"] = old


@pytest.fixture(scope="session")
def digits():
    from shrinkviz.data import load_dataset

    return load_dataset("digits")
