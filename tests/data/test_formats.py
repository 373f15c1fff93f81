from __future__ import annotations

import gzip
import struct

import pytest
import torch

from shrinkviz.data.formats import DataFormatError, read_cifar_batch, read_idx, write_cifar_batch, write_idx


def test_idx_round_trip_gzip_and_raw(tmp_path):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for name in ("x-idx3-ubyte.gz", "x-idx3-ubyte"):
        path = write_idx(tmp_path / name, images)
        torch.testing.assert_close(read_idx(path), images)


def test_idx_header_is_the_official_layout(tmp_path):
    path = write_idx(tmp_path / "labels-idx1-ubyte.gz", torch.tensor([7, 2], dtype=torch.uint8))
    raw = gzip.decompress(path.read_bytes())
    assert (
        raw[:4] == bytes([0, 0, 8, 1]) and struct.unpack(">I", raw[4:8]) == (2,) and raw[8:] == bytes([7, 2])
    )


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataFormatError, match="magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01")
    with pytest.raises(DataFormatError, match="holds 1"):
        read_idx(tmp_path / "short")


def test_cifar_pickle_round_trip(tmp_path):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 9, 3, 3])
    path = write_cifar_batch(tmp_path / "data_batch_1", images, labels, "labels")
    got_x, got_y = read_cifar_batch(path, "labels")
    torch.testing.assert_close(got_x, images)
    assert got_y.tolist() == [0, 9, 3, 3] and got_y.dtype == torch.int64


def test_cifar_rejects_non_pickle(tmp_path):
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="CIFAR"):
        read_cifar_batch(tmp_path / "test_batch", "labels")
