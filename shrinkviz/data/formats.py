"""Parsers and writers for the official dataset file formats: IDX (MNIST, Fashion-MNIST) and the CIFAR
python pickles. Writers exist so that tests (and users converting their own data) can produce
byte-exact official-format files.

Example:
    >>> import torch, tempfile, pathlib
    >>> from shrinkviz.data.formats import write_idx, read_idx
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte.gz"
    >>> _ = write_idx(p, torch.tensor([3, 1, 4], dtype=torch.uint8))
    >>> read_idx(p).tolist()
    [3, 1, 4]
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from shrinkviz.core.io import atomic_write_bytes

_IDX_UBYTE = 0x08


class DataFormatError(ValueError):
    """A dataset file does not follow its official format."""


def _open_maybe_gzip(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115 - the caller closes it


def _read_into(fh: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``fh`` (streamed: no copy of the file in memory); the bytes read."""
    done = 0
    while done < len(view):
        n = fh.readinto(view[done:])
        if not n:
            break
        done += n
    return done


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzip-compressed or not) into a uint8 tensor.

    The payload is decompressed straight into the tensor, so loading Fashion-MNIST's training images
    (47 MB) needs no second or third copy of them in memory.
    """
    path = Path(path)
    with _open_maybe_gzip(path) as fh:
        magic = fh.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
            raise DataFormatError(f"{path} is not an IDX file (bad magic number)")
        if magic[2] != _IDX_UBYTE:
            raise DataFormatError(f"{path}: IDX element type 0x{magic[2]:02x} is not unsigned byte (0x08)")
        ndim = magic[3]
        shape = fh.read(4 * ndim)
        if len(shape) < 4 * ndim:
            raise DataFormatError(f"{path}: the IDX header is cut short")
        dims = struct.unpack(f">{ndim}I", shape)
        expected = int(np.prod(dims)) if dims else 0
        out = torch.empty(expected, dtype=torch.uint8)
        got = _read_into(fh, memoryview(out.numpy()))
        extra = 0
        while chunk := fh.read(1 << 20):
            extra += len(chunk)
    if got + extra != expected:
        raise DataFormatError(
            f"{path}: header announces {dims} = {expected} bytes but the file holds {got + extra}"
        )
    return out.view(dims)


def write_idx(path: str | Path, tensor: torch.Tensor, compress: bool | None = None) -> Path:
    """Write a uint8 tensor as an IDX file (gzip when the name ends in .gz or ``compress`` is True)."""
    path = Path(path)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"write_idx needs a uint8 tensor, got {tensor.dtype}")
    header = bytes([0, 0, _IDX_UBYTE, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    payload = header + tensor.contiguous().numpy().tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    return atomic_write_bytes(path, payload)


_CIFAR_GLOBALS = frozenset(
    {
        # what a pickled numpy array needs: its reconstructor, the ndarray type and dtype
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x pickles, as in the official files
        ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2 pickles
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3 (str -> bytes only)
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: every other global is refused, so a planted
    file cannot make unpickling import or call anything else."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR batch holds only lists, bytes and numpy arrays"
        )


def read_cifar_batch(path: str | Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR python pickle batch into (uint8 N x 3 x 32 x 32 images, int64 labels).

    The pickle is read with an unpickler that builds only dicts, lists, strings, bytes and numpy arrays
    of plain dtypes; anything else is refused with a :class:`DataFormatError` before it runs.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            entry = _CifarUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataFormatError(
            f"{path} is not a CIFAR python pickle ({exc}). Fix: delete it and download the official "
            "archive again"
        ) from exc
    if not isinstance(entry, dict):
        raise DataFormatError(f"{path}: a CIFAR batch is a dict, got {type(entry).__name__}")
    if isinstance(entry.get("data"), np.ndarray) and entry["data"].dtype.hasobject:
        raise DataFormatError(
            f"{path}: 'data' holds Python objects, not the uint8 pixels of the CIFAR format"
        )
    if "data" not in entry or label_key not in entry:
        raise DataFormatError(f"{path} lacks the 'data' or '{label_key}' entry of the CIFAR format")
    images = np.asarray(entry["data"], dtype=np.uint8)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{path}: 'data' has shape {images.shape}, expected (N, 3072)")
    labels = torch.as_tensor(np.asarray(entry[label_key]), dtype=torch.int64)
    return torch.from_numpy(images.reshape(-1, 3, 32, 32).copy()), labels


def write_cifar_batch(path: str | Path, images: torch.Tensor, labels: torch.Tensor, label_key: str) -> Path:
    """Write (uint8 N x 3 x 32 x 32, labels) as a CIFAR python pickle batch."""
    entry = {
        "batch_label": Path(path).name,
        "data": images.reshape(images.shape[0], -1).numpy(),
        label_key: labels.tolist(),
        "filenames": [f"{i}.png" for i in range(images.shape[0])],
    }
    return atomic_write_bytes(path, pickle.dumps(entry, protocol=2))
