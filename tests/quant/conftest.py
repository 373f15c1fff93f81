"""Fixtures of the quantization tests: a tiny_cnn trained on digits once per session through the zoo
(cached in the session's cache root), on one thread like every test (see tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def trained_cnn(digits):
    import shrinkviz as sv

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the per-test one_thread
    try:
        return sv.pretrained("tiny_cnn", digits, epochs=10, progress=False)
    finally:
        torch.set_num_threads(previous)
