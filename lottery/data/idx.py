"""MNIST and Fashion-MNIST from the standard IDX files in a local folder, with an opt-in, checksum-verified download.

Reading works offline from files placed by hand (plain or .gz). Downloading is off by default because most machines
that run experiments have no network; when on, each file lands in a temp file first and is moved into place only after
its published MD5 matches, so an interrupted or corrupted download never leaves a file that looks valid.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from lottery.data.splits import DatasetNotFoundError, Splits

# IDX type codes -> big-endian numpy dtype, and the torch dtype the data is returned as.
_IDX_TYPES: dict[int, tuple[np.dtype, torch.dtype]] = {
    0x08: (np.dtype(">u1"), torch.uint8),
    0x09: (np.dtype(">i1"), torch.int8),
    0x0B: (np.dtype(">i2"), torch.int16),
    0x0C: (np.dtype(">i4"), torch.int32),
    0x0D: (np.dtype(">f4"), torch.float32),
    0x0E: (np.dtype(">f8"), torch.float64),
}
_TORCH_TO_IDX_CODE = {torch_dtype: code for code, (_, torch_dtype) in _IDX_TYPES.items()}

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

_NUM_CLASSES = 10
_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class _Source:
    mean: float  # of the train images scaled to [0, 1]; the constants everyone uses, so results compare
    std: float
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # .gz file name -> MD5 published in torchvision/datasets/mnist.py


SOURCES: dict[str, _Source] = {
    "mnist": _Source(
        mean=0.1307,
        std=0.3081,
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": _Source(
        mean=0.2860,
        std=0.3530,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}


class ChecksumMismatchError(ValueError):
    """A file's MD5 differs from the published one (corrupted download, wrong mirror, or a different file)."""


# ---------------------------------------------------------------------------------------------------- IDX format


def _open(path: Path, mode: str):
    # mtime=0 makes gzip output byte-identical across runs, so checksums of files we write are reproducible.
    if path.suffix == ".gz":
        return gzip.GzipFile(filename=str(path), mode=mode, mtime=0) if "w" in mode else gzip.open(path, mode)
    return open(path, mode)


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (plain, or gzip when the name ends in .gz) into a tensor of its stored dtype and shape."""
    path = Path(path)
    try:
        with _open(path, "rb") as handle:
            data = handle.read()
    except (EOFError, gzip.BadGzipFile) as error:
        raise ValueError(f"{path} is not a readable gzip file ({error}); delete it and fetch it again") from error

    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file: its first bytes {data[:4].hex()} lack the 0x0000 magic prefix")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_TYPES)
        raise ValueError(f"{path} has IDX type code 0x{code:02X}, which is not one of {known}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, shorter than its {header_len}-byte header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big", signed=True) for i in range(ndim))
    np_dtype, _ = _IDX_TYPES[code]
    expected = math.prod(dims) * np_dtype.itemsize
    actual = len(data) - header_len
    if any(d < 0 for d in dims) or actual != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: its header says shape {dims} ({expected} data bytes) but it holds "
            f"{actual} data bytes; delete it and fetch it again"
        )
    array = np.frombuffer(data, dtype=np_dtype, offset=header_len).reshape(dims)
    # Convert to native byte order and copy, so the tensor owns writable memory.
    return torch.from_numpy(array.astype(np_dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, tensor: torch.Tensor) -> None:
    """Write a tensor as an IDX file (gzip when the name ends in .gz); the inverse of `read_idx`."""
    path = Path(path)
    if tensor.dtype not in _TORCH_TO_IDX_CODE:
        names = ", ".join(str(d) for d in _TORCH_TO_IDX_CODE)
        raise ValueError(f"cannot write a {tensor.dtype} tensor as IDX to {path}: use one of {names}")
    if tensor.dim() > 255:
        raise ValueError(f"cannot write a {tensor.dim()}-d tensor as IDX to {path}: the format allows 255 dims")
    code = _TORCH_TO_IDX_CODE[tensor.dtype]
    np_dtype, _ = _IDX_TYPES[code]
    header = bytes([0, 0, code, tensor.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    body = tensor.detach().cpu().contiguous().numpy().astype(np_dtype).tobytes()
    with _open(path, "wb") as handle:
        handle.write(header + body)


# ---------------------------------------------------------------------------------------------------- checksums


def file_md5(path: str | Path) -> str:
    """Hex MD5 of a file's bytes, read in chunks so large files do not need to fit in memory."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise ChecksumMismatchError unless the file's MD5 equals `expected` (case-insensitive)."""
    actual = file_md5(path)
    if actual != expected.lower():
        raise ChecksumMismatchError(f"checksum mismatch for {path}: expected md5 {expected.lower()}, got {actual}")


# ---------------------------------------------------------------------------------------------------- download


def _fetch(url: str, dest: Path) -> None:
    """Copy `url` to `dest`. Module-level so tests can replace it and simulate downloads without network."""
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def download_verified(urls: Sequence[str], dest: Path, md5: str, fix: str | None = None) -> None:
    """Fetch `dest` from the first of `urls` that answers, moving it into place only once its MD5 equals `md5`.

    A checksum mismatch raises ChecksumMismatchError at once (a wrong file is not a network problem to retry); when
    every URL fails, DatasetNotFoundError names the folder, the file and each failure.
    """
    failures: list[str] = []
    for url in urls:
        # Same folder as the target so os.replace is an atomic rename on one filesystem.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                _fetch(url, tmp)
            except (URLError, OSError, TimeoutError) as error:  # URLError is an OSError; listed for the reader
                failures.append(f"{url}: {error}")
                continue
            verify_md5(tmp, md5)
            os.replace(tmp, dest)
            return
        finally:
            tmp.unlink(missing_ok=True)  # a no-op after os.replace succeeded
    raise DatasetNotFoundError(
        dest.parent,
        [dest.name],
        reason=f"download of {dest.name} failed from every mirror: " + "; ".join(failures),
        fix=fix,
    )


def _download_one(folder: Path, file_name: str, source: _Source) -> None:
    """Download `file_name` into `folder`, trying each mirror, and move it into place only once its MD5 matches."""
    download_verified([mirror + file_name for mirror in source.mirrors], folder / file_name, source.md5[file_name])


# ---------------------------------------------------------------------------------------------------- loading


def _find(folder: Path, base_name: str) -> Path | None:
    """The plain file if present, else the .gz one, else None."""
    for candidate in (folder / base_name, folder / f"{base_name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The path of each IDX file present in `folder`, and the base names of those that are not."""
    found = {base_name: _find(folder, base_name) for base_name in FILE_NAMES}
    present = {base_name: path for base_name, path in found.items() if path is not None}
    return present, [base_name for base_name in FILE_NAMES if base_name not in present]


def _load_pair(images_path: Path, labels_path: Path, source: _Source) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.dim() != 3:
        raise ValueError(
            f"{images_path} should hold uint8 images of shape (N, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(
            f"{labels_path} should hold uint8 labels of shape (N,), got {labels.dtype} {tuple(labels.shape)}"
        )
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= _NUM_CLASSES:
        raise ValueError(f"{labels_path} has label {int(labels.max())}, outside 0..{_NUM_CLASSES - 1}")
    x = (images.unsqueeze(1).to(torch.float32) / 255.0 - source.mean) / source.std
    return x, labels.to(torch.int64)


def load_idx_dataset(root: str | Path, name: str, download: bool = False) -> Splits:
    """Load MNIST or Fashion-MNIST from the four IDX files in `root` (each plain or .gz).

    With `download=True`, files that are missing are fetched from the dataset's mirror and checked against the
    published MD5 first; files already present are used as they are.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown IDX dataset {name!r}: use one of {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    folder = Path(root).expanduser()

    paths, missing = _locate(folder)
    if missing and download:
        folder.mkdir(parents=True, exist_ok=True)
        for base_name in missing:
            _download_one(folder, f"{base_name}.gz", source)
        paths, missing = _locate(folder)
    if missing:
        raise DatasetNotFoundError(folder, missing, reason=f"{name} files are missing from {folder}")

    x_train, y_train = _load_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], source)
    x_test, y_test = _load_pair(paths[TEST_IMAGES], paths[TEST_LABELS], source)
    return Splits(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, num_classes=_NUM_CLASSES)
