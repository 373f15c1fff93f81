"""Dataset registry and resolution, on official-format files written by the tests."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from shrinkviz.data import DatasetNotFoundError, available_datasets, load_dataset, sources, verify
from shrinkviz.data.formats import write_cifar_batch, write_idx


def _trust(monkeypatch, name, folder):
    """Register the digests of the small files a test wrote, as if they were the official ones."""
    own = verify.digests_of(folder, sources.SOURCES[name].files)
    monkeypatch.setitem(verify.DIGESTS, name, {k: (d,) for k, d in own.items()})


def _write_mnist_like(folder, n_train=50, n_test=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {
        "train-images-idx3-ubyte.gz": torch.randint(
            0, 256, (n_train, 28, 28), dtype=torch.uint8, generator=g
        ),
        "train-labels-idx1-ubyte.gz": (torch.arange(n_train) % 10).to(torch.uint8),
        "t10k-images-idx3-ubyte.gz": torch.randint(0, 256, (n_test, 28, 28), dtype=torch.uint8, generator=g),
        "t10k-labels-idx1-ubyte.gz": (torch.arange(n_test) % 10).to(torch.uint8),
    }
    for name, tensor in data.items():
        write_idx(folder / name, tensor)
    return data


def _write_cifar(folder, name):
    if name == "cifar10":
        base, key = folder / "cifar-10-batches-py", "labels"
        parts = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        base, key = folder / "cifar-100-python", "fine_labels"
        parts = ["train", "test"]
    base.mkdir(parents=True)
    for i, part in enumerate(parts):
        images = torch.full((4, 3, 32, 32), i, dtype=torch.uint8)
        write_cifar_batch(base / part, images, torch.tensor([i, i + 1, 2, 3]), key)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="valid: cifar10, cifar100, digits, fashion_mnist, imagefolder, mnist"
    ):
        load_dataset("imagenet21k")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_load_from_the_cache_first(tmp_path, name, monkeypatch):
    data = _write_mnist_like(sources.dataset_dir(name, tmp_path))
    _trust(monkeypatch, name, sources.dataset_dir(name, tmp_path))
    ds = load_dataset(name, cache=tmp_path, download=False)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (45, 5, 20)
    torch.testing.assert_close(ds.test.images[:, 0], data["t10k-images-idx3-ubyte.gz"])
    # train + val partition the official train split exactly
    all_train = torch.cat([ds.train.images, ds.val.images])[:, 0]
    assert sorted(map(bytes, all_train.flatten(1).numpy())) == sorted(
        map(bytes, data["train-images-idx3-ubyte.gz"].flatten(1).numpy())
    )


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_datasets_parse_the_official_pickles(tmp_path, name, classes, monkeypatch):
    _write_cifar(sources.dataset_dir(name, tmp_path), name)
    _trust(monkeypatch, name, sources.dataset_dir(name, tmp_path))
    ds = load_dataset(name, cache=tmp_path, download=False, val_fraction=0.25)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == classes
    n_train_official = 20 if name == "cifar10" else 4
    assert len(ds.train) + len(ds.val) == n_train_official and len(ds.test) == 4
    assert int(ds.test.images[0, 0, 0, 0]) == (5 if name == "cifar10" else 1)


def test_validation_split_is_fixed_and_disjoint(tmp_path, monkeypatch):
    _write_mnist_like(sources.dataset_dir("mnist", tmp_path), n_train=200)
    _trust(monkeypatch, "mnist", sources.dataset_dir("mnist", tmp_path))
    a = load_dataset("mnist", cache=tmp_path, download=False)
    from shrinkviz.data import datasets

    datasets._load_cached.cache_clear()
    b = load_dataset("mnist", cache=tmp_path, download=False)
    torch.testing.assert_close(a.val.images, b.val.images)
    train_rows = {bytes(r) for r in a.train.images.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in a.val.images.flatten(1).numpy())


def test_missing_offline_names_the_three_ways(tmp_path, monkeypatch):
    monkeypatch.setitem(
        sources.SOURCES, "mnist", replace(sources.SOURCES["mnist"], mirrors=("http://127.0.0.1:9/",))
    )
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("mnist", cache=tmp_path, download=True)
    text = str(err.value)
    assert "1. put the official files" in text and "2." in text and "3. allow a download" in text
    assert "127.0.0.1:9" in text
    assert not list((tmp_path / "datasets" / "mnist").glob("*"))  # nothing half-written


def test_system_package_is_used_and_verified(tmp_path, monkeypatch):
    system = tmp_path / "system"
    system.mkdir()
    _write_mnist_like(system)
    src = replace(sources.SOURCES["fashion_mnist"], system_dirs=(str(system),))
    monkeypatch.setitem(sources.SOURCES, "fashion_mnist", src)
    # the real digests refuse these small files, naming the file and the package to reinstall
    with pytest.raises(
        verify.DataIntegrityError, match="train-images-idx3-ubyte.gz: not the official"
    ) as err:
        sources.resolve("fashion_mnist", tmp_path / "cache", download=False)
    assert "47,040,016 B decoded" in str(err.value) and "apt-get install -y dataset-fashion-mnist" in str(
        err.value
    )
    _trust(monkeypatch, "fashion_mnist", system)
    assert sources.resolve("fashion_mnist", tmp_path / "cache", download=False) == system


def _serve(folder):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_verifies_checksums_and_unpacks(tmp_path, monkeypatch):
    """The real download path, against a loopback server holding an official-format archive."""
    staging = tmp_path / "staging"
    _write_cifar(staging, "cifar10")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    served = tmp_path / "served"
    served.mkdir()
    (served / "cifar-10-python.tar.gz").write_bytes(archive.getvalue())
    md5 = hashlib.md5(archive.getvalue()).hexdigest()
    server = _serve(served)
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        bad = replace(
            sources.SOURCES["cifar10"], mirrors=(url,), archives=(("cifar-10-python.tar.gz", "f" * 32),)
        )
        monkeypatch.setitem(sources.SOURCES, "cifar10", bad)
        with pytest.raises(DatasetNotFoundError, match="checksum mismatch"):
            sources.resolve("cifar10", tmp_path / "c1")
        assert not (tmp_path / "c1" / "datasets" / "cifar10" / "cifar-10-python.tar.gz").exists()
        good = replace(bad, archives=(("cifar-10-python.tar.gz", md5),))
        monkeypatch.setitem(sources.SOURCES, "cifar10", good)
        with pytest.raises(verify.DataIntegrityError, match="data_batch_1: not the official cifar10"):
            load_dataset("cifar10", cache=tmp_path / "c2")  # the unpacked batches are checked too
        _trust(monkeypatch, "cifar10", staging)
        ds = load_dataset("cifar10", cache=tmp_path / "c2")
        assert len(ds.test) == 4
    finally:
        server.shutdown()


def test_digits_is_always_offline():
    ds = load_dataset("digits")
    assert ds.input_shape == (1, 8, 8) and len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert ds.train.images.dtype == torch.uint8 and int(ds.train.images.max()) == 255


def test_fashion_mnist_system_package_is_the_official_data():
    if not sources._all_present(
        sources.Path("/usr/share/datasets/fashion-mnist"), sources.SOURCES["fashion_mnist"].files
    ):
        pytest.skip("dataset-fashion-mnist is not installed")
    ds = load_dataset("fashion_mnist", download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54000, 6000, 10000)
    assert ds.mean == pytest.approx((0.286,), abs=2e-3) and ds.std == pytest.approx((0.353,), abs=2e-3)


def test_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 30), colour).save(tmp_path / split / cls / f"{i}.png")
    ds = load_dataset("imagefolder", path=tmp_path, image_size=16, val_fraction=0.5)
    assert ds.input_shape == (3, 16, 16) and ds.num_classes == 2 and ds.classes == ("cat", "dog")
    assert len(ds.test) == 6 and len(ds.train) + len(ds.val) == 6
    red = ds.test.images[ds.test.labels == 0]
    assert np.all(red[:, 0].numpy() == 255) and np.all(red[:, 2].numpy() == 0)
    with pytest.raises(DatasetNotFoundError, match="train/<class>"):
        load_dataset("imagefolder", path=tmp_path / "train")


def test_subset_rejects_non_positive():
    with pytest.raises(ValueError, match="subset train=0"):
        load_dataset("digits").subset(train=0)


def test_registry_names():
    assert available_datasets() == ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist", "imagefolder"]


def test_has_local_files_looks_without_downloading(tmp_path):
    assert not sources.has_local_files("mnist", tmp_path)
    _write_mnist_like(sources.dataset_dir("mnist", tmp_path))
    assert sources.has_local_files("mnist", tmp_path)


def test_carving_in_place_gives_the_same_splits_and_leaves_callers_tensors_alone():
    from shrinkviz.data.datasets import from_tensors
    from shrinkviz.data.splits import carve_validation

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1000, 1, 3, 3), generator=g, dtype=torch.uint8)
    labels = torch.arange(1000)
    copied = carve_validation(images, labels, 0.1)
    compacted = carve_validation(images.clone(), labels, 0.1, owned=True, chunk=7)
    for a, b in zip(copied, compacted, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(copied[0].images, images[copied[0].labels])  # labels are the original positions
    before = images.clone()
    from_tensors("example", images, labels, images[:10], labels[:10])
    assert torch.equal(images, before)
