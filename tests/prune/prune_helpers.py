"""Helpers of the pruning tests: synthetic datasets of any image shape, model state snapshots."""

from __future__ import annotations

import torch

from shrinkviz.data import Dataset, Split


def make_dataset(shape: tuple[int, int, int], n: int = 96, seed: int = 0, classes: int = 10) -> Dataset:
    """A random uint8 image dataset of ``shape`` with ``n`` examples per split."""
    gen = torch.Generator().manual_seed(seed)

    def split() -> Split:
        images = torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)
        return Split(images, torch.randint(0, classes, (n,), generator=gen))

    return Dataset("synthetic", split(), split(), split(), classes, (0.5,) * shape[0], (0.25,) * shape[0])


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a model's full state (parameters and buffers, masks included)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert sorted(after) == sorted(before)
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
