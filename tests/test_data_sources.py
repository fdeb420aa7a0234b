"""Data sources: IDX parsing, MNIST-style folders and their download path (simulated, no network), digits, MNIST-1D."""

from __future__ import annotations

import gzip
import hashlib
import random
import shutil
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from lottery.data import idx
from lottery.data.digits import load_digits
from lottery.data.idx import (
    FILE_NAMES,
    ChecksumMismatchError,
    file_md5,
    load_idx_dataset,
    read_idx,
    verify_md5,
    write_idx,
)
from lottery.data.mnist1d import load_mnist1d
from lottery.data.splits import DatasetNotFoundError, Splits

NUM_TRAIN, NUM_TEST = 12, 5


def _tiny_dataset(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (NUM_TRAIN, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (NUM_TEST, 28, 28), generator=g, dtype=torch.uint8),
    }
    images["train-images-idx3-ubyte"][0, 0, 0] = 0  # a known zero pixel to check normalization
    images["train-images-idx3-ubyte"][0, 0, 1] = 255
    labels = {
        "train-labels-idx1-ubyte": torch.arange(NUM_TRAIN, dtype=torch.uint8) % 10,
        "t10k-labels-idx1-ubyte": torch.tensor([9, 0, 3, 3, 7], dtype=torch.uint8),
    }
    return {**images, **labels}


def _write_folder(folder: Path, gz: bool) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    data = _tiny_dataset()
    for name, tensor in data.items():
        write_idx(folder / (f"{name}.gz" if gz else name), tensor)
    return data


# ---------------------------------------------------------------------------------------------------- IDX format


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    tensor = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, tensor)
    back = read_idx(path)
    assert back.dtype == torch.uint8
    assert torch.equal(back, tensor)
    if suffix == ".gz":
        with gzip.open(path, "rb") as handle:  # really gzip, not plain bytes with a .gz name
            assert handle.read(4) == bytes([0, 0, 0x08, 3])


def test_idx_header_layout_is_standard(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"
    write_idx(path, torch.tensor([1, 2, 3], dtype=torch.uint8))
    assert path.read_bytes() == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 1, 2, 3])


def test_idx_round_trip_other_dtype(tmp_path: Path) -> None:
    tensor = torch.tensor([[-1, 70000], [3, -5]], dtype=torch.int32)
    write_idx(tmp_path / "x", tensor)
    assert torch.equal(read_idx(tmp_path / "x"), tensor)


def test_truncated_idx_names_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, torch.zeros(2, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_header_names_file(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_names_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    write_idx(path, torch.zeros(100, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_bad_magic_raises(tmp_path: Path) -> None:
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_unknown_type_code_raises(tmp_path: Path) -> None:
    path = tmp_path / "odd"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(ValueError, match="0x07"):
        read_idx(path)


# ---------------------------------------------------------------------------------------------------- folders


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_dataset_tiny_folder(tmp_path: Path, gz: bool) -> None:
    data = _write_folder(tmp_path / "mnist", gz=gz)
    splits = load_idx_dataset(tmp_path / "mnist", "mnist")

    assert isinstance(splits, Splits)
    assert splits.x_train.shape == (NUM_TRAIN, 1, 28, 28)
    assert splits.x_test.shape == (NUM_TEST, 1, 28, 28)
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_classes == 10
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    assert splits.y_train.tolist() == data["train-labels-idx1-ubyte"].tolist()
    assert splits.y_test.tolist() == [9, 0, 3, 3, 7]

    mean, std = 0.1307, 0.3081
    assert splits.x_train[0, 0, 0, 0].item() == pytest.approx(-mean / std)
    assert splits.x_train[0, 0, 0, 1].item() == pytest.approx((1 - mean) / std)
    expected = (data["t10k-images-idx3-ubyte"].float() / 255 - mean) / std
    torch.testing.assert_close(splits.x_test[:, 0], expected)


def test_fashion_mnist_uses_its_own_constants(tmp_path: Path) -> None:
    _write_folder(tmp_path, gz=False)
    splits = load_idx_dataset(tmp_path, "fashion_mnist")
    assert splits.x_train[0, 0, 0, 0].item() == pytest.approx(-0.2860 / 0.3530)


def test_mixed_plain_and_gz_files(tmp_path: Path) -> None:
    data = _tiny_dataset()
    for i, (name, tensor) in enumerate(data.items()):
        write_idx(tmp_path / (f"{name}.gz" if i % 2 else name), tensor)
    splits = load_idx_dataset(str(tmp_path), "mnist")
    assert len(splits.y_train) == NUM_TRAIN and len(splits.y_test) == NUM_TEST


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fashion_mnist") as info:
        load_idx_dataset(tmp_path, "cifar10")
    assert "cifar10" in str(info.value)


def test_missing_folder_without_download(tmp_path: Path) -> None:
    folder = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_idx_dataset(folder, "mnist")
    message = str(info.value)
    assert str(folder) in message
    assert "train-images-idx3-ubyte" in message
    assert "data.download=true" in message
    assert isinstance(info.value, FileNotFoundError)
    assert not folder.exists()  # download=False must not create anything


def test_one_missing_file_is_named(tmp_path: Path) -> None:
    _write_folder(tmp_path, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        load_idx_dataset(tmp_path, "mnist")
    assert info.value.missing == ["t10k-labels-idx1-ubyte"]
    assert "t10k-labels-idx1-ubyte" in str(info.value)
    assert "train-images-idx3-ubyte" not in str(info.value).split("missing files:")[1]


def test_mismatched_counts_raise(tmp_path: Path) -> None:
    _write_folder(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", torch.zeros(NUM_TRAIN - 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labels"):
        load_idx_dataset(tmp_path, "mnist")


# ---------------------------------------------------------------------------------------------------- checksums


def test_md5_of_known_content(tmp_path: Path) -> None:
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello world\n")
    assert file_md5(path) == "6f5902ac237024bdd0c176cb93063dc4"
    verify_md5(path, "6f5902ac237024bdd0c176cb93063dc4")
    verify_md5(path, "6F5902AC237024BDD0C176CB93063DC4")
    with pytest.raises(ChecksumMismatchError) as info:
        verify_md5(path, "0" * 32)
    assert "0" * 32 in str(info.value) and "6f5902ac237024bdd0c176cb93063dc4" in str(info.value)


def test_published_checksums_cover_every_file() -> None:
    for source in idx.SOURCES.values():
        assert sorted(source.md5) == sorted(f"{name}.gz" for name in FILE_NAMES)
        assert all(len(value) == 32 for value in source.md5.values())
    assert idx.SOURCES["mnist"].md5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


# ---------------------------------------------------------------------------------------------------- download


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url)
        Path(dest).write_bytes(b"this is not the MNIST you are looking for")

    monkeypatch.setattr(idx, "_fetch", fake_fetch)
    folder = tmp_path / "mnist"
    with pytest.raises(ChecksumMismatchError) as info:
        load_idx_dataset(folder, "mnist", download=True)
    assert "f68b3c2dcbeaaa9fbdd348bbdeb94873" in str(info.value)
    assert hashlib.md5(b"this is not the MNIST you are looking for").hexdigest() in str(info.value)
    assert fetched == ["https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz"]
    assert list(folder.iterdir()) == []  # neither the temp file nor the final file


@pytest.mark.parametrize("error", [URLError("no route to host"), OSError("connection reset"), TimeoutError("slow")])
def test_download_network_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def failing_fetch(url: str, dest: Path) -> None:
        Path(dest).write_bytes(b"partial")  # a half-written temp file must be cleaned up too
        raise error

    monkeypatch.setattr(idx, "_fetch", failing_fetch)
    with pytest.raises(DatasetNotFoundError) as info:
        load_idx_dataset(tmp_path, "fashion_mnist", download=True)
    message = str(info.value)
    assert "download" in message and "failed" in message
    assert str(tmp_path) in message
    assert "fashion-mnist.s3-website" in message
    assert list(tmp_path.iterdir()) == []


def test_download_success_fetches_only_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A "server" folder with gzipped files stands in for the mirror; their md5s replace the published ones.
    server = tmp_path / "server"
    data = _write_folder(server, gz=True)
    for name in FILE_NAMES:
        monkeypatch.setitem(idx.SOURCES["mnist"].md5, f"{name}.gz", file_md5(server / f"{name}.gz"))

    fetched: list[str] = []

    def fake_fetch(url: str, dest: Path) -> None:
        fetched.append(url.rsplit("/", 1)[1])
        shutil.copyfile(server / url.rsplit("/", 1)[1], dest)

    monkeypatch.setattr(idx, "_fetch", fake_fetch)
    folder = tmp_path / "local"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", data["train-images-idx3-ubyte"])  # already there, plain

    splits = load_idx_dataset(folder, "mnist", download=True)
    assert sorted(fetched) == sorted(f"{name}.gz" for name in FILE_NAMES[1:])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["train-images-idx3-ubyte"] + [f"{name}.gz" for name in FILE_NAMES[1:]]
    )
    assert splits.y_test.tolist() == [9, 0, 3, 3, 7]

    fetched.clear()
    load_idx_dataset(folder, "mnist", download=True)
    assert fetched == []  # nothing is downloaded twice


# ---------------------------------------------------------------------------------------------------- digits


def test_load_digits_shapes_and_split() -> None:
    splits = load_digits(test_fraction=0.2, split_seed=0)
    assert splits.x_train.shape[1:] == (1, 8, 8) and splits.x_test.shape[1:] == (1, 8, 8)
    assert splits.input_shape == (1, 8, 8)
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    assert len(splits.x_train) + len(splits.x_test) == 1797
    assert len(splits.x_test) == round(1797 * 0.2)
    assert len(splits.y_train) == len(splits.x_train) and len(splits.y_test) == len(splits.x_test)
    assert splits.num_classes == 10
    assert set(splits.y_train.tolist()) == set(range(10))
    # standardized with the train split's statistics
    assert splits.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert splits.x_train.std().item() == pytest.approx(1.0, abs=1e-5)


def test_load_digits_is_deterministic_and_seeded() -> None:
    a, b = load_digits(split_seed=3), load_digits(split_seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_digits(split_seed=4)
    assert not torch.equal(a.y_train, c.y_train)


def test_load_digits_split_is_a_partition() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    splits = load_digits(test_fraction=0.25, split_seed=1)
    assert len(splits.x_train) + len(splits.x_test) == 1797
    assert len(splits.x_test) == round(1797 * 0.25)
    # Every image lands in exactly one split: the class counts add up, and since one affine map is applied to both
    # splits, the distinct images of train + test are exactly the distinct raw images.
    labels = torch.cat([splits.y_train, splits.y_test])
    assert torch.equal(torch.bincount(labels), torch.bincount(torch.as_tensor(raw.target)))
    images = torch.cat([splits.x_train, splits.x_test]).reshape(1797, -1)
    assert len(torch.unique(images, dim=0)) == len(np.unique(raw.data, axis=0))


def test_load_digits_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.5)


def test_load_digits_leaves_torch_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_digits()
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------------------- MNIST-1D


def test_load_mnist1d_shapes_dtypes_determinism() -> None:
    a = load_mnist1d(num_samples=500)
    assert a.x_train.shape == (400, 40) and a.x_test.shape == (100, 40)
    assert a.y_train.shape == (400,) and a.y_test.shape == (100,)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.input_shape == (40,)
    assert a.num_classes == 10
    assert set(a.y_train.tolist()) <= set(range(10))
    b = load_mnist1d(num_samples=500)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_mnist1d(num_samples=500, seed=7)
    assert not torch.equal(a.x_train, c.x_train)


def test_load_mnist1d_leaves_global_rngs_alone() -> None:
    np.random.seed(2024)
    random.seed(2024)
    numpy_before = np.random.get_state()
    python_before = random.getstate()
    load_mnist1d(num_samples=100)
    numpy_after = np.random.get_state()
    assert numpy_before[0] == numpy_after[0]
    assert np.array_equal(numpy_before[1], numpy_after[1])
    assert numpy_before[2:] == numpy_after[2:]
    assert random.getstate() == python_before


def test_load_mnist1d_rejects_tiny_sizes() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        load_mnist1d(num_samples=5)
