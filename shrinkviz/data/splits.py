"""One split of a dataset as tensors (:class:`Split`), the seeded validation split carved from the official
training split, and the normalisation statistics computed on what remains.

Example:
    >>> import torch
    >>> images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    >>> train, val = carve_validation(images.clone(), torch.arange(10), 0.2)
    >>> len(train), len(val), sorted(train.labels.tolist() + val.labels.tolist()) == list(range(10))
    (8, 2, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VAL_SPLIT_SEED = 0
"""The validation split is carved with this seed, independent of any training seed, so every run of
a dataset sees the same train/val partition."""


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N x C x H x W) and int64 labels (N)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 N x C x H x W, got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels shape {tuple(self.labels.shape)} does not match {self.images.shape[0]} images"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int | None) -> Split:
        """The first ``n`` examples (all when ``n`` is None)."""
        return self if n is None or n >= len(self) else Split(self.images[:n], self.labels[:n])


def carve_validation(
    images: torch.Tensor, labels: torch.Tensor, val_fraction: float, owned: bool = False, chunk: int = 4096
) -> tuple[Split, Split]:
    """The seeded train / validation partition of the official training split (both in file order).

    With ``owned`` (a tensor the loader just read, used by nothing else) the training images are gathered
    into the front of ``images``'s own storage, chunk by chunk (every source index is at or after its
    destination, and each chunk is gathered before it is written), so a second copy of the split never
    exists: the training split is a view of the loaded tensor (42 MB less peak memory for Fashion-MNIST).
    Otherwise (a caller's tensor) it is gathered into a new one.
    """
    n_val = int(round(len(labels) * val_fraction))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    val = Split(images[val_idx], labels[val_idx])
    if not owned:
        return Split(images[train_idx], labels[train_idx]), val
    for start in range(0, len(train_idx), chunk):
        sources = train_idx[start : start + chunk]
        images[start : start + len(sources)] = images[sources]
    return Split(images[: len(train_idx)], labels[train_idx]), val


def channel_stats(images: torch.Tensor, chunk: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 images scaled to [0, 1], rounded to 4 decimals.

    Exact integer sums over chunks of images: a whole split in float64 would take 8 bytes per pixel twice
    over (690 MB for Fashion-MNIST's training split), the sums a few kB. Chunks of 256 images keep the
    int64 temporaries at 1.6 MB for Fashion-MNIST (4,096 images took 51 MB, most of a sweep worker's loading
    peak) and run faster, in cache: 0.04 s against 0.10 s for Fashion-MNIST, 0.10 s against 0.95 s for
    CIFAR-10's training split (one AMD EPYC core).
    """
    total = torch.zeros(images.shape[1], dtype=torch.int64)
    squares = torch.zeros(images.shape[1], dtype=torch.int64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.int64)
        total += block.sum(dim=(0, 2, 3))
        squares += (block * block).sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total.double() / (n * 255.0)
    var = (squares.double() - total.double() ** 2 / n) / max(n - 1, 1) / 255.0**2
    std = var.clamp(min=0).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(max(v, 1e-3), 4) for v in std.tolist())
