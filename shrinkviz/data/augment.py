"""Batched tensor augmentation and batching on the training device.

Whole splits stay uint8 tensors; each batch is indexed, augmented (pad-and-random-crop, horizontal
flip) on the device in a few tensor ops, and normalised. Randomness comes from an explicit CPU
generator, so a seed gives the same batches on any device.

Example:
    >>> import torch
    >>> from shrinkviz.data.augment import random_crop
    >>> x = torch.arange(1, 17, dtype=torch.uint8).reshape(1, 1, 4, 4)
    >>> out = random_crop(x, padding=1, generator=torch.Generator().manual_seed(0))
    >>> padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # the crop is a 4x4 window of the padded image
    >>> windows = [padded[..., i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
    >>> out.shape, any(torch.equal(out, window) for window in windows)
    (torch.Size([1, 1, 4, 4]), True)
    >>> flipped = random_flip(x.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0))
    >>> mirrored = torch.tensor([not torch.equal(im, x[0]) for im in flipped])  # each image: x or its mirror
    >>> k = int(mirrored.sum())
    >>> torch.equal(flipped[mirrored], x.flip(3).expand(k, 1, 4, 4)), 0 < k < 64
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from shrinkviz.data.datasets import Split

AUGMENTATIONS = ("none", "crop", "flip", "crop_flip")


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad every image by ``padding`` zeros and cut a random window of the original size from each.

    One ``gather`` over flattened pixels does the whole batch (2.5x faster than 4-D advanced indexing).
    """
    if padding <= 0:
        return images
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # n x h
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # n x w
    flat = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, flat).view(n, c, h, w)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


@dataclass(frozen=True)
class Normalizer:
    """uint8 images -> float, scaled to [0, 1] and standardised per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=images.device).view(shape)
        std = torch.tensor(self.std, device=images.device).view(shape)
        return (images.float() / 255.0 - mean) / std


def batches(
    split: Split,
    batch_size: int,
    normalize: Normalizer,
    device: torch.device,
    generator: torch.Generator | None = None,
    augment: str = "none",
    crop_padding: int = 4,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (normalised float images, labels) batches of a split on ``device``.

    Args:
        split: the data.
        batch_size: examples per batch; the last batch holds the remainder (never dropped).
        normalize: turns uint8 into standardised floats.
        device: where batches are produced.
        generator: shuffles and augments when given; None keeps the order and never augments.
        augment: one of ``AUGMENTATIONS``.
        crop_padding: padding of the random crop.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r}; valid: {', '.join(AUGMENTATIONS)}")
    images = split.images.to(device, non_blocking=True)
    labels = split.labels.to(device, non_blocking=True)
    n = len(split)
    order = torch.randperm(n, generator=generator).to(device) if generator is not None else None
    for start in range(0, n, batch_size):
        if order is None:
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            x, y = images[idx], labels[idx]
            if augment in ("crop", "crop_flip"):
                x = random_crop(x, crop_padding, generator)
            if augment in ("flip", "crop_flip"):
                x = random_flip(x, generator)
        yield normalize(x), y
