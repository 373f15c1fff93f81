from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shrinkviz.data import Normalizer, Split, batches
from shrinkviz.data.augment import random_crop, random_flip


def test_random_crop_returns_a_window_of_the_padded_image():
    images = torch.randint(
        1, 256, (16, 2, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    out = random_crop(images, 2, torch.Generator().manual_seed(1))
    padded = F.pad(images, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, r : r + 5, c : c + 7] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    # with 16 images, not every one can have been cut at the same offset
    assert len({tuple(map(int, (out[i] == 0).sum((1, 2)))) for i in range(16)}) > 1


def test_random_flip_flips_some_and_keeps_others():
    images = torch.arange(8 * 4, dtype=torch.uint8).reshape(8, 1, 1, 4)
    out = random_flip(images, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], images[i].flip(2)) for i in range(8)]
    kept = [torch.equal(out[i], images[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_batches_cover_each_example_once_including_the_partial_last_batch():
    split = Split(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
    out = list(
        batches(
            split, 4, Normalizer((0.0,), (1 / 255,)), torch.device("cpu"), torch.Generator().manual_seed(0)
        )
    )
    assert [len(y) for _, y in out] == [4, 4, 2]
    labels = torch.cat([y for _, y in out])
    assert sorted(labels.tolist()) == list(range(10))
    values = torch.cat([x.flatten() for x, _ in out])
    torch.testing.assert_close(values, labels.float())  # normalised with std 1/255 gives back the pixel


def test_augmented_batches_are_deterministic_per_seed():
    split = Split(torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8), torch.arange(50))
    norm = Normalizer((0.5,), (0.25,))

    def run(seed):
        return [
            x
            for x, _ in batches(
                split, 16, norm, torch.device("cpu"), torch.Generator().manual_seed(seed), "crop_flip"
            )
        ]

    for a, b in zip(run(3), run(3), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(run(3), run(4), strict=True))


def test_unknown_augmentation_is_rejected():
    split = Split(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="augment='mixup'; valid: none, crop, flip, crop_flip"):
        next(batches(split, 2, Normalizer((0.0,), (1.0,)), torch.device("cpu"), torch.Generator(), "mixup"))
