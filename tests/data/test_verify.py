"""Dataset files are verified against known digests and parsed without running planted code."""

from __future__ import annotations

import hashlib
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shrinkviz.data import datasets, load_dataset, sources, verify
from shrinkviz.data.formats import DataFormatError, read_cifar_batch, write_cifar_batch, write_idx


class _Planted:
    """Unpickling this runs ``os.system`` (touching a sentinel file) if the unpickler allows it."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.sentinel}",))


def test_planted_pickle_is_refused_and_not_executed(tmp_path):
    sentinel = tmp_path / "EXECUTED"
    entry = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Planted(sentinel)}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataFormatError, match=r"refusing to load (posix|os)\.system") as err:
        read_cifar_batch(tmp_path / "data_batch_1", "labels")
    assert "data_batch_1" in str(err.value) and "\n" not in str(err.value)
    assert not sentinel.exists()


def test_official_numpy1_pickles_still_parse(tmp_path):
    """The official batches were written with numpy 1 (``numpy.core.multiarray``): that global is allowed."""
    images = torch.arange(2 * 3072, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 32, 32)
    path = write_cifar_batch(tmp_path / "b", images, torch.tensor([3, 4]), "labels")
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = read_cifar_batch(path, "labels")
    torch.testing.assert_close(x, images)
    assert y.tolist() == [3, 4]


def test_object_arrays_are_refused(tmp_path):
    entry = {"data": np.array([[1, "a"]], dtype=object), "labels": [0]}
    (tmp_path / "b").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataFormatError, match="Python objects"):
        read_cifar_batch(tmp_path / "b", "labels")


def _fake_fashion(folder: Path, n: int = 120) -> None:
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", n), ("t10k", n // 2)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte.gz",
            torch.randint(0, 256, (count, 28, 28), generator=g).to(torch.uint8),
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", (torch.arange(count) % 10).to(torch.uint8))


def test_fake_fashion_mnist_in_the_cache_is_refused_naming_the_file(tmp_path):
    _fake_fashion(sources.dataset_dir("fashion_mnist", tmp_path))
    with pytest.raises(verify.DataIntegrityError) as err:
        load_dataset("fashion_mnist", cache=tmp_path, download=False)
    text = str(err.value)
    assert "\n" not in text
    assert "train-images-idx3-ubyte.gz: not the official fashion_mnist file" in text
    assert "47,040,016 B decoded, sha256 c59f468a2f672dc8" in text and "; 94,096 B decoded" in text
    assert "Fix: delete" in text and "re-download" in text


def test_wrong_file_under_a_real_registry_name_is_refused(tmp_path):
    folder = sources.dataset_dir("mnist", tmp_path)
    _fake_fashion(folder, 10)
    with pytest.raises(verify.DataIntegrityError, match="not the official mnist file.*md5 f68b3c2dcbeaaa9f"):
        load_dataset("mnist", cache=tmp_path, download=False)


def test_registered_digests_accept_the_files_they_describe(tmp_path, monkeypatch):
    folder = sources.dataset_dir("mnist", tmp_path)
    _fake_fashion(folder, 10)
    own = verify.digests_of(folder, sources.SOURCES["mnist"].files)
    monkeypatch.setitem(verify.DIGESTS, "mnist", {})
    verify.register_digests("mnist", own, overwrite=True)
    assert len(load_dataset("mnist", cache=tmp_path, download=False).test) == 5
    with pytest.raises(ValueError, match="overwrite=True"):
        verify.register_digests("mnist", own)


def test_bad_digest_values_are_refused():
    with pytest.raises(ValueError, match="expected 64 hex digits"):
        verify.Digest("sha256", "abc")
    with pytest.raises(ValueError, match="allowed values: md5, sha256"):
        verify.Digest("sha1", "0" * 40)


def test_verification_is_cached_per_path_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    digest = verify.Digest("sha256", hashlib.sha256(b"hello").hexdigest(), size=5)
    calls = []
    real = verify._hash
    monkeypatch.setattr(verify, "_hash", lambda *a: calls.append(a) or real(*a))
    verify.verify_file(path, [digest], "toy")
    verify.verify_file(path, [digest], "toy")
    assert len(calls) == 1
    path.write_bytes(b"hellO")  # same size, new content and mtime: hashed again and refused
    import os

    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    with pytest.raises(verify.DataIntegrityError, match="toy file"):
        verify.verify_file(path, [digest], "toy")
    assert len(calls) == 2


def test_real_fashion_mnist_is_verified(monkeypatch):
    system = Path("/usr/share/datasets/fashion-mnist")
    if not sources._all_present(system, sources.SOURCES["fashion_mnist"].files):
        pytest.skip("dataset-fashion-mnist is not installed")
    checked = verify.verify_dataset("fashion_mnist", system)
    assert [p.name for p in checked] == list(sources.SOURCES["fashion_mnist"].files)
    datasets._load_cached.cache_clear()
    calls = []
    real = verify._hash
    monkeypatch.setattr(verify, "_hash", lambda *a: calls.append(a) or real(*a))
    assert len(load_dataset("fashion_mnist", download=False).test) == 10000
    assert calls == []  # verified above in this process: not hashed again


def test_image_folder_manifest_is_checked(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / split / cls / "x.png")
    files = [f"{s}/{c}/x.png" for s in ("train", "val") for c in ("a", "b")]
    lines = [f"{verify.digests_of(tmp_path, [f])[f].hexdigest}  {f}" for f in files]
    (tmp_path / verify.MANIFEST).write_text("\n".join(lines) + "\n")
    assert len(load_dataset("imagefolder", path=tmp_path, image_size=4).test) == 2
    Image.new("RGB", (4, 4), (99, 20, 30)).save(tmp_path / "val" / "b" / "x.png")
    datasets._load_cached_folder.cache_clear()
    with pytest.raises(verify.DataIntegrityError, match=r"val/b/x.png: not the official .*regenerate"):
        load_dataset("imagefolder", path=tmp_path, image_size=4)
    (tmp_path / verify.MANIFEST).write_text("nonsense\n")
    with pytest.raises(verify.DataIntegrityError, match="sha256sum's format"):
        verify.verify_manifest(tmp_path)
