"""CIFAR-10 from python-pickle batches the tests write themselves (no network), its download path with a simulated
server, and the generated CIFAR-shaped dataset."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from lottery import data as datasets
from lottery.data import cifar, idx
from lottery.data.idx import ChecksumMismatchError, file_md5
from lottery.data.splits import DatasetNotFoundError
from lottery.data.synthetic import load_synthetic_cifar10

TRAIN_SIZES = (30, 30, 30, 30, 30)
TEST_SIZE = 20


def batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"batch {seed}",
        "labels": [int(v) for v in rng.integers(0, 10, n)],  # a list of ints, as in the official files
        "data": rng.integers(0, 256, (n, cifar.PIXELS), dtype=np.uint8),
        "filenames": [f"img_{seed}_{i}.png" for i in range(n)],
    }


def write_batches(folder: Path, protocol: int = 2, bytes_keys: bool = False, numpy1: bool = False) -> dict[str, dict]:
    """The six files of cifar-10-batches-py/, small. Protocol 2 is the official files' protocol; `numpy1` names the
    array reconstructor `numpy.core.multiarray`, as the official files (written by numpy 1) do."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate(cifar.FILE_NAMES):
        entry = batch(TRAIN_SIZES[i] if name != cifar.TEST_FILE else TEST_SIZE, seed=i)
        stored = {k.encode(): v for k, v in entry.items()} if bytes_keys else entry
        raw = pickle.dumps(stored, protocol=protocol)
        if numpy1:
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            assert b"numpy.core.multiarray" in raw
        (folder / name).write_bytes(raw)
        written[name] = entry
    return written


@pytest.mark.parametrize(
    "protocol,bytes_keys,numpy1", [(2, False, True), (2, True, False), (4, False, False), (5, False, False)]
)
def test_reader_loads_generated_batches_in_order_normalised_per_channel(tmp_path, protocol, bytes_keys, numpy1):
    written = write_batches(tmp_path / cifar.FOLDER, protocol, bytes_keys, numpy1)
    splits = cifar.load_cifar10(tmp_path)
    assert splits.x_train.shape == (150, 3, 32, 32) and splits.x_test.shape == (20, 3, 32, 32)
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64 and splits.num_classes == 10
    labels = [v for name in cifar.TRAIN_FILES for v in written[name]["labels"]]
    assert splits.y_train.tolist() == labels and splits.y_test.tolist() == written["test_batch"]["labels"]
    # Row layout: 1024 red, 1024 green, 1024 blue values, each row-major. Example 31 is batch 2's second image.
    raw = written["data_batch_2"]["data"][1]
    for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        pixel = torch.tensor(float(raw[c * 1024 + h * 32 + w]), dtype=torch.float32)
        expected = (pixel / 255 - torch.tensor(cifar.MEAN[c])) / torch.tensor(cifar.STD[c])  # torchvision's ops
        assert splits.x_train[31, c, h, w] == expected
    black = [(0 - torch.tensor(m)) / torch.tensor(s) for m, s in zip(cifar.MEAN, cifar.STD, strict=True)]
    assert splits.pad_value == tuple(float(b) for b in black)  # what a black pixel normalises to, per channel


def test_missing_folder_names_folder_files_and_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        datasets.load("cifar10", root=str(tmp_path / "nowhere"))
    message = str(error.value)
    assert f"folder: {tmp_path / 'nowhere' / cifar.FOLDER}" in message
    assert "missing files: data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5, test_batch" in message
    assert "cifar-10-python.tar.gz" in message and "data.download=true" in message and "data.root" in message


def test_one_missing_file_is_named(tmp_path):
    write_batches(tmp_path / cifar.FOLDER)
    (tmp_path / cifar.FOLDER / "data_batch_4").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing files: data_batch_4\n"):
        cifar.load_cifar10(tmp_path)


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_crafted_pickle_is_refused_without_running_its_code(tmp_path):
    folder = tmp_path / cifar.FOLDER
    write_batches(folder)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": []}))
    with pytest.raises(ValueError, match=r"data_batch_3 is not a readable CIFAR-10 batch .*pathlib"):
        cifar.load_cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "entry,match",
    [
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "has label 10, outside 0..9"),
        ({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, r"should be uint8 of shape \(N, 3072\)"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "should be uint8"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "has 2 images but labels of shape"),
        ({"images": np.zeros((2, 3072), np.uint8)}, "lacks 'data' or 'labels'"),
        ([1, 2], "holds a list, not a CIFAR-10 batch dict"),
    ],
)
def test_malformed_batches_are_clear_errors_naming_the_file(tmp_path, entry, match):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(ValueError, match=match) as error:
        cifar.read_batch(path)
    assert str(path) in str(error.value)


def test_a_truncated_batch_names_the_file(tmp_path):
    folder = tmp_path / cifar.FOLDER
    write_batches(folder)
    whole = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"test_batch is not a readable CIFAR-10 batch.*delete it"):
        cifar.load_cifar10(tmp_path)


# ---- download, with a simulated server: a tarball built from generated batches


def tarball(tmp_path: Path, skip: str | None = None) -> Path:
    source = tmp_path / "server"
    write_batches(source / cifar.FOLDER)
    path = tmp_path / "server.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in cifar.FILE_NAMES:
            if name != skip:
                tar.add(source / cifar.FOLDER / name, arcname=f"{cifar.FOLDER}/{name}")
        info = tarfile.TarInfo(f"{cifar.FOLDER}/readme.html")  # extra members are left alone
        tar.addfile(info, io.BytesIO(b""))
    return path


def serve(monkeypatch, archive: Path, fetched: list[str]) -> None:
    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url)
        dest.write_bytes(archive.read_bytes())

    monkeypatch.setattr(idx, "_fetch", fake_fetch)


def test_download_verifies_the_archive_and_extracts_the_batches(tmp_path, monkeypatch):
    archive, fetched = tarball(tmp_path), []
    serve(monkeypatch, archive, fetched)
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", file_md5(archive))
    root = tmp_path / "data"
    splits = datasets.load("cifar10", root=str(root), download=True)
    assert fetched == [cifar.URL] and len(splits.x_train) == 150
    assert sorted(p.name for p in root.iterdir()) == [cifar.FOLDER]  # the archive is removed once extracted
    assert sorted(p.name for p in (root / cifar.FOLDER).iterdir()) == sorted(cifar.FILE_NAMES)
    datasets.load("cifar10", root=str(root), download=True)
    assert fetched == [cifar.URL]  # files present: nothing fetched again


def test_download_with_a_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, tarball(tmp_path), [])  # the real published MD5 cannot match a generated archive
    root = tmp_path / "data"
    with pytest.raises(ChecksumMismatchError, match=f"expected md5 {cifar.ARCHIVE_MD5}"):
        datasets.load("cifar10", root=str(root), download=True)
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_download_without_network_names_url_folder_and_fix(tmp_path, monkeypatch):
    def no_network(url: str, dest: Path) -> None:
        raise URLError("Name or service not known")

    monkeypatch.setattr(idx, "_fetch", no_network)
    with pytest.raises(DatasetNotFoundError) as error:
        datasets.load("cifar10", root=str(tmp_path), download=True)
    message = str(error.value)
    assert cifar.URL in message and "Name or service not known" in message and f"folder: {tmp_path}" in message
    assert f"unpack {cifar.ARCHIVE}" in message


def test_an_archive_lacking_a_batch_is_a_clear_error(tmp_path, monkeypatch):
    archive = tarball(tmp_path, skip="data_batch_5")
    serve(monkeypatch, archive, [])
    monkeypatch.setattr(cifar, "ARCHIVE_MD5", file_md5(archive))
    with pytest.raises(DatasetNotFoundError, match=r"lacks cifar-10-batches-py/data_batch_5"):
        datasets.load("cifar10", root=str(tmp_path / "data"), download=True)


# ---- the generated CIFAR-shaped dataset


def test_synthetic_cifar10_is_seeded_shaped_and_learnable():
    a, b = load_synthetic_cifar10(1200), load_synthetic_cifar10(1200)
    assert a.x_train.shape == (1000, 3, 32, 32) and a.x_test.shape == (200, 3, 32, 32) and a.num_classes == 10
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, load_synthetic_cifar10(1200, seed=1).x_train)
    assert set(a.y_train.tolist()) == set(range(10))
    # Class-dependent signal: the nearest class mean (from the training split) classifies the test split.
    means = torch.stack([a.x_train[a.y_train == c].mean(0) for c in range(10)]).flatten(1)
    predicted = torch.cdist(a.x_test.flatten(1), means).argmin(1)
    assert (predicted == a.y_test).float().mean() > 0.9


def test_synthetic_cifar10_leaves_the_global_rng_alone_and_rejects_tiny_sizes():
    state = torch.get_rng_state()
    load_synthetic_cifar10(60)
    assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="data.num_samples=5 is too small for synthetic_cifar10"):
        load_synthetic_cifar10(5)


def test_a_tiny_run_on_generated_cifar_batches_with_augmentation(run_tiny, tmp_path):
    write_batches(tmp_path / "cifar" / cifar.FOLDER)
    rows, seed_dir = run_tiny(
        "data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.augment=true", "model=conv2", "model.width=0.125"
    )
    assert [r["level"] for r in rows] == [0, 1, 2]
    assert json.loads((seed_dir.parent / "hash.json").read_text())["data.augment"] is True
