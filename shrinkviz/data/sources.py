"""Where dataset files come from, in order: ``data_cache/`` -> a system dataset package -> a download
from the official source with checksum verification -> a clear error naming the three ways.

Example:
    >>> from shrinkviz.data.sources import SOURCES
    >>> sorted(SOURCES)
    ['cifar10', 'cifar100', 'fashion_mnist', 'mnist']
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shrinkviz.core.io import atomic_path, cache_root
from shrinkviz.data import verify


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the places shrinkviz looks, and could not be downloaded."""


@dataclass(frozen=True)
class Source:
    """The official files of one dataset and where to find or fetch them.

    Attributes:
        files: file names that must all be present (in data_cache or a system directory).
        archives: (file name, md5 of the official download) pairs to fetch from ``mirrors``.
        mirrors: base URLs tried in order.
        system_dirs: directories of OS dataset packages holding ``files``.
        extract: archives are tar.gz files to unpack into the cache directory.
        how_to_install: a one-line hint for the OS package, if any.

    Every file found (in data_cache, a system directory or after a download) is checked against its
    known digests in ``shrinkviz.data.verify.DIGESTS`` before it is read.
    """

    files: tuple[str, ...]
    archives: tuple[tuple[str, str], ...]
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()
    extract: bool = False
    how_to_install: str = ""


_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

SOURCES: dict[str, Source] = {
    "fashion_mnist": Source(
        files=_IDX_FILES,
        archives=tuple(
            zip(
                _IDX_FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
                strict=True,
            )
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_install="apt-get update && apt-get install -y dataset-fashion-mnist",
    ),
    "mnist": Source(
        files=_IDX_FILES,
        archives=tuple(
            zip(
                _IDX_FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
                strict=True,
            )
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    "cifar10": Source(
        files=(
            "cifar-10-batches-py/data_batch_1",
            "cifar-10-batches-py/data_batch_2",
            "cifar-10-batches-py/data_batch_3",
            "cifar-10-batches-py/data_batch_4",
            "cifar-10-batches-py/data_batch_5",
            "cifar-10-batches-py/test_batch",
        ),
        archives=(("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        extract=True,
    ),
    "cifar100": Source(
        files=("cifar-100-python/train", "cifar-100-python/test"),
        archives=(("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        extract=True,
    ),
}


def dataset_dir(name: str, cache: Path | None = None) -> Path:
    """The data_cache directory of a dataset: ``<cache>/datasets/<name>``."""
    return (cache or cache_root()) / "datasets" / name


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _all_present(directory: Path, files: tuple[str, ...]) -> bool:
    return all((directory / f).is_file() for f in files)


def _verify(name: str, source: Source, directory: Path, system: bool) -> None:
    """Check every file against its known digests (``shrinkviz.data.verify.DIGESTS``), wherever found."""
    if system:
        fix = f"reinstall the system package ({source.how_to_install})"
    else:
        fix = (
            f"delete {directory} and load again to re-download (verified), or put the official files "
            f"{list(source.files)} there"
        )
    verify.verify_dataset(name, directory, fix)


def _download(url: str, target: Path, md5: str, timeout: float) -> None:
    """Fetch ``url`` to ``target`` atomically, verifying the official md5 before publishing it."""
    with atomic_path(target) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:  # noqa: S310
            shutil.copyfileobj(response, out)
        actual = _md5(tmp)
        if actual != md5:
            raise OSError(f"checksum mismatch for {url}: md5 {actual}, expected {md5}")


def _fetch(name: str, source: Source, directory: Path, timeout: float) -> list[str]:
    """Download (and unpack) every archive into ``directory``; return the errors met."""
    errors: list[str] = []
    for file_name, md5 in source.archives:
        target = directory / file_name
        if target.is_file() and _md5(target) == md5:
            continue
        for mirror in source.mirrors:
            try:
                _download(mirror + file_name, target, md5, timeout)
                break
            except (OSError, urllib.error.URLError) as exc:
                errors.append(f"{mirror + file_name}: {exc}")
        else:
            return errors
        if source.extract:
            with tempfile.TemporaryDirectory(dir=directory) as tmp_dir, tarfile.open(target) as tar:
                tar.extractall(tmp_dir, filter="data")
                for member in Path(tmp_dir).iterdir():  # publish each top folder with one rename
                    final = directory / member.name
                    if final.exists():
                        shutil.rmtree(final)
                    member.rename(final)
    return errors


def resolve(name: str, cache: Path | None = None, download: bool = True, timeout: float = 30.0) -> Path:
    """Return a directory holding all official files of dataset ``name``.

    Args:
        name: a key of ``SOURCES``.
        cache: the cache root (default: ``shrinkviz.core.io.cache_root()``).
        download: try the official mirrors when the files are nowhere local.
        timeout: seconds per download attempt.

    Raises:
        DatasetNotFoundError: naming the three ways to provide the data.
        DataIntegrityError: a file found differs from the official one (naming it and the fix).
    """
    source = SOURCES[name]
    local = dataset_dir(name, cache)
    if _all_present(local, source.files):
        _verify(name, source, local, system=False)
        return local
    for system_dir in map(Path, source.system_dirs):
        if _all_present(system_dir, source.files):
            _verify(name, source, system_dir, system=True)
            return system_dir
    errors: list[str] = []
    if download:
        local.mkdir(parents=True, exist_ok=True)
        errors = _fetch(name, source, local, timeout)
        if not errors and _all_present(local, source.files):
            _verify(name, source, local, system=False)
            return local
    ways = [f"1. put the official files {list(source.files)} in {local}"]
    if source.system_dirs:
        ways.append(
            f"2. install the system package ({source.how_to_install}) which provides {source.system_dirs[0]}"
        )
    else:
        ways.append("2. (no system package is known for this dataset)")
    ways.append(
        f"3. allow a download from {source.mirrors[0]} (checksums are verified)"
        + (f"; it failed: {errors[0]}" if errors else " (download=False was given)")
    )
    raise DatasetNotFoundError(
        f"dataset {name!r} not found. Provide it in one of three ways:\n  " + "\n  ".join(ways)
    )


def has_local_files(name: str, cache: Path | None = None) -> bool:
    """True when dataset ``name`` is available without a download (data_cache or a system package).

    Notebooks use it to pick the papers' setting (CIFAR-10) when its files are present.
    """
    source = SOURCES[name]
    return _all_present(dataset_dir(name, cache), source.files) or any(
        _all_present(Path(d), source.files) for d in source.system_dirs
    )
