"""Known digests of every registry dataset file, and the check that refuses a file that does not match.

Each file of a registry dataset has one or more accepted :class:`Digest` s; a file passes when any of them
matches. A digest is either of the file's bytes as distributed (``decoded=False``, e.g. the md5 of an
official ``.gz`` download) or of its decoded content (``decoded=True``: the gunzipped bytes), which is what
stays the same when a distributor recompresses the files (Debian's Fashion-MNIST package does).

Results are cached per process by (path, size, mtime), so loading a dataset twice hashes it once.

The table is injectable: :func:`register_digests` adds or replaces the digests of a dataset (tests register
small files in the official formats with their own digests).

Example:
    >>> import hashlib, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels"
    >>> _ = p.write_bytes(b"abc")
    >>> d = Digest("sha256", hashlib.sha256(b"abc").hexdigest(), size=3)
    >>> verify_file(p, [d], "toy")
    >>> try:
    ...     verify_file(p, [Digest("sha256", "0" * 64, size=4)], "toy")
    ... except DataIntegrityError as exc:
    ...     print(str(exc).split(" (")[1].split(")")[0])
    expected 4 B, sha256 0000000000000000...; found 3 B, sha256 ba7816bf8f01cfea...
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shrinkviz.data.formats import DataFormatError

_ALGOS = ("md5", "sha256")


class DataIntegrityError(DataFormatError):
    """A dataset file's size or digest is not the one its dataset's official files have."""


@dataclass(frozen=True)
class Digest:
    """One accepted digest of a file.

    Attributes:
        algo: ``"md5"`` or ``"sha256"``.
        hexdigest: lower-case hex digest.
        decoded: the digest is of the gunzipped content (files ending in ``.gz``), not of the raw bytes.
        size: byte count of what is hashed (decoded bytes when ``decoded``), checked first; None = unknown.
    """

    algo: str
    hexdigest: str
    decoded: bool = False
    size: int | None = None

    def __post_init__(self) -> None:
        if self.algo not in _ALGOS:
            raise ValueError(f"Digest.algo={self.algo!r}: allowed values: {', '.join(_ALGOS)}")
        width = 32 if self.algo == "md5" else 64
        hexdigest = str(self.hexdigest).lower()
        if len(hexdigest) != width or set(hexdigest) - set("0123456789abcdef"):
            raise ValueError(
                f"Digest.hexdigest={self.hexdigest!r}: expected {width} hex digits for {self.algo}"
            )
        object.__setattr__(self, "hexdigest", hexdigest)

    def describe(self) -> str:
        """A short human form, e.g. ``'47,040,016 B decoded, sha256 c59f468a2f672dc8...'``."""
        size = f"{self.size:,} B{' decoded' if self.decoded else ''}, " if self.size is not None else ""
        kind = "" if self.size is not None or not self.decoded else "decoded "
        return f"{size}{kind}{self.algo} {self.hexdigest[:16]}..."


def _idx(md5_gz: str, sha256_idx: str | None, size: int) -> tuple[Digest, ...]:
    """An IDX file: the md5 of the official .gz download, and (when known) the sha256 of its IDX bytes."""
    out = [Digest("md5", md5_gz)]
    if sha256_idx is not None:
        out.append(Digest("sha256", sha256_idx, decoded=True, size=size))
    return tuple(out)


_TRAIN_IMAGES, _TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
_TEST_IMAGES, _TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"

DIGESTS: dict[str, dict[str, tuple[Digest, ...]]] = {
    # md5 of the official .gz downloads, and sha256 of the decompressed IDX bytes (which is what Debian's
    # recompressed dataset-fashion-mnist package still matches).
    "fashion_mnist": {
        _TRAIN_IMAGES: _idx(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            47_040_016,
        ),
        _TRAIN_LABELS: _idx(
            "25c81989df183df01b3e8a0aad5dffbe",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            60_008,
        ),
        _TEST_IMAGES: _idx(
            "bef4ecab320f06d8554ea6380940ec79",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            7_840_016,
        ),
        _TEST_LABELS: _idx(
            "bb300cfdad3c16e7a12a480ee83cd310",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            10_008,
        ),
    },
    # md5 of the official .gz downloads (the published MNIST checksums).
    "mnist": {
        _TRAIN_IMAGES: _idx("f68b3c2dcbeaaa9fbdd348bbdeb94873", None, 47_040_016),
        _TRAIN_LABELS: _idx("d53e105ee54ea40749a09fcbcd1e9432", None, 60_008),
        _TEST_IMAGES: _idx("9fb629c4189551a2d022fa330f9573f3", None, 7_840_016),
        _TEST_LABELS: _idx("ec29112dd5afa0611ce80d1b7f02629c", None, 10_008),
    },
    # md5 of each python batch as unpacked from the official cifar-10-python.tar.gz.
    "cifar10": {
        f"cifar-10-batches-py/{name}": (Digest("md5", md5),)
        for name, md5 in (
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
        )
    },
    # md5 of each file as unpacked from the official cifar-100-python.tar.gz.
    "cifar100": {
        "cifar-100-python/train": (Digest("md5", "16019d7e3df5f24257cddd939b257f8d"),),
        "cifar-100-python/test": (Digest("md5", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    },
}


def register_digests(
    dataset: str, digests: Mapping[str, Digest | Iterable[Digest]], *, overwrite: bool = False
) -> None:
    """Set the accepted digests of a dataset's files (relative path -> one digest or several).

    Raises:
        ValueError: the dataset already has digests and ``overwrite`` is False.

    Example:
        >>> register_digests("toy_set", {"a.bin": Digest("md5", "0" * 32)})
        >>> DIGESTS.pop("toy_set")["a.bin"][0].algo
        'md5'
    """
    if dataset in DIGESTS and not overwrite:
        raise ValueError(f"dataset {dataset!r} already has digests; pass overwrite=True to replace them")
    DIGESTS[dataset] = {
        str(name): (d,) if isinstance(d, Digest) else tuple(d) for name, d in dict(digests).items()
    }


def digests_of(directory: str | os.PathLike[str], files: Iterable[str]) -> dict[str, Digest]:
    """The sha256 and size of each of ``files`` under ``directory``: what to pass to :func:`register_digests`
    for a dataset of one's own (or a test's small files in an official format).

    Example:
        >>> import pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a.bin").write_bytes(b"xy")
        >>> digests_of(root, ["a.bin"])["a.bin"].size
        2
    """
    out = {}
    for name in files:
        size, hexes = _hash(Path(directory) / name, {"sha256"}, decoded=False)
        out[name] = Digest("sha256", hexes["sha256"], size=size)
    return out


_VERIFIED: dict[tuple[str, int, int, tuple[Digest, ...]], bool] = {}


def _hash(path: Path, algos: set[str], decoded: bool) -> tuple[int, dict[str, str]]:
    """(byte count, {algo: hex}) of the file's bytes, or of its gunzipped content when ``decoded``."""
    hashers = {a: hashlib.new(a, usedforsecurity=False) for a in algos}
    size = 0
    opener = gzip.open if decoded else open
    with opener(path, "rb") as fh:
        while block := fh.read(1 << 20):
            size += len(block)
            for h in hashers.values():
                h.update(block)
    return size, {a: h.hexdigest() for a, h in hashers.items()}


def _matches(path: Path, digests: tuple[Digest, ...]) -> tuple[bool, list[str]]:
    """Whether any digest matches, and what was found (for the message)."""
    found: list[str] = []
    for decoded in (False, True):
        group = [d for d in digests if d.decoded == decoded]
        if not group:
            continue
        try:
            size, hexes = _hash(path, {d.algo for d in group}, decoded)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            found.append(f"not gzip-compressed ({type(exc).__name__})" if decoded else str(exc))
            continue
        if any((d.size is None or d.size == size) and hexes[d.algo] == d.hexdigest for d in group):
            return True, found
        hexes_text = ", ".join(f"{a} {h[:16]}..." for a, h in sorted(hexes.items()))
        found.append(f"{size:,} B{' decoded' if decoded else ''}, {hexes_text}")
    return False, found


def verify_file(path: str | os.PathLike[str], digests: Iterable[Digest], dataset: str, fix: str = "") -> None:
    """Raise :class:`DataIntegrityError` unless ``path`` matches one of ``digests``.

    Args:
        path: the file.
        digests: accepted digests (any one matching is enough).
        dataset: the dataset's name, for the message.
        fix: how to get the right file (default: delete it and let shrinkviz download it again, or put
            the official file there).
    """
    path = Path(path)
    digests = tuple(digests)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, digests)
    if _VERIFIED.get(key):
        return
    ok, found = _matches(path, digests)
    if not ok:
        expected = " or ".join(d.describe() for d in digests)
        fix = (
            fix
            or f"delete {path} and load again to re-download it (verified), or put the official file there"
        )
        raise DataIntegrityError(
            f"{path}: not the official {dataset} file (expected {expected}; found {'; '.join(found)}). "
            f"Fix: {fix}"
        )
    _VERIFIED[key] = True


def verify_dataset(dataset: str, directory: str | os.PathLike[str], fix: str = "") -> list[Path]:
    """Check every file of ``dataset`` that has digests under ``directory``; return the files checked.

    Datasets without an entry in :data:`DIGESTS` pass unchecked (an empty list)."""
    checked = []
    for name, digests in DIGESTS.get(dataset, {}).items():
        path = Path(directory) / name
        verify_file(path, digests, dataset, fix)
        checked.append(path)
    return checked


MANIFEST = "SHA256SUMS"
"""Name of the optional manifest of a user dataset folder: lines ``<sha256>  <relative path>`` (the
output format of ``sha256sum``)."""


def verify_manifest(root: str | os.PathLike[str]) -> list[Path]:
    """Check the files listed in ``root/SHA256SUMS`` (when present); return the files checked.

    Raises:
        DataIntegrityError: a listed file differs, is missing, or a manifest line is malformed.

    Example:
        >>> import hashlib, pathlib, tempfile
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (root / "a.txt").write_bytes(b"x")
        >>> _ = (root / MANIFEST).write_text(hashlib.sha256(b"x").hexdigest() + "  a.txt\\n")
        >>> [p.name for p in verify_manifest(root)]
        ['a.txt']
    """
    root = Path(root)
    manifest = root / MANIFEST
    if not manifest.is_file():
        return []
    checked = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        try:
            if len(parts) != 2:
                raise ValueError(line)
            digest = Digest("sha256", parts[0])
        except ValueError:
            raise DataIntegrityError(
                f"{manifest}:{number}: expected '<sha256>  <relative path>' (sha256sum's format), got {line!r}. "
                f"Fix: regenerate it with `cd {root} && sha256sum <files> > {MANIFEST}`"
            ) from None
        path = root / parts[1].strip().lstrip("*")
        if not path.is_file():
            raise DataIntegrityError(
                f"{path}: listed in {manifest} but missing. Fix: restore the file or regenerate {MANIFEST}"
            )
        verify_file(path, [digest], root.name, fix=f"restore the original file or regenerate {manifest}")
        checked.append(path)
    return checked
