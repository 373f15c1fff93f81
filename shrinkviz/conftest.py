"""pytest setup of the docstring examples (``pytest --doctest-modules shrinkviz``); pytest loads this file
for items under ``shrinkviz/`` only, and no module of the package imports it.

* The examples share one temporary cache root for the session, so those that train a baseline or write
  results never touch the checkout's ``data_cache/`` (a baseline trained by one example is reused by the
  next; examples that write results give their own temporary store).
* Each example runs on one intra-op thread (the CI machine's cores are shared) from torch seed 0.
* The examples of ``shrinkviz.core.compat`` need torchvision, an optional extra: they are skipped when it
  is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest

NEEDS_TORCHVISION = ("shrinkviz.core.compat",)


@pytest.fixture(scope="session", autouse=True)
def _doctest_cache(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("shrinkviz_doctest_cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SHRINKVIZ_CACHE", str(root))
        yield root


@pytest.fixture(autouse=True)
def _one_thread_seeded():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return
    skip = pytest.mark.skip(reason="torchvision (optional extra) is not installed")
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name.startswith(NEEDS_TORCHVISION):
            item.add_marker(skip)
