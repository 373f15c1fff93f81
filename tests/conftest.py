"""Shared fixtures. Every test session gets its own cache root, so tests never read or write the
user's data_cache (datasets still resolve to the system package, e.g. Debian's Fashion-MNIST)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shrinkviz_cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHRINKVIZ_CACHE", str(root))
        yield root


@pytest.fixture(scope="session")
def digits():
    from shrinkviz.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per test: the 2 cores are shared, and oversubscribed OpenMP threads spin (up to
    10x slower). Tests assert results, never timings, so this changes speed only."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
