"""pytest setup of the docstring examples (``pytest --doctest-modules shrinkviz``); pytest loads this file
for items under ``shrinkviz/`` only, and no module of the package imports it.

Every example sees a fresh temporary cache root, so examples that train or write (the zoo, the store)
never touch the checkout's ``data_cache/``, and runs on one intra-op thread with a fixed seed.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _doctest_sandbox(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("SHRINKVIZ_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
