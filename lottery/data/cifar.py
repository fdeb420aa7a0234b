"""CIFAR-10 from the standard python-pickle batches in `<data.root>/cifar-10-batches-py/`, with an opt-in download.

Reading works offline from the folder that `cifar-10-python.tar.gz` unpacks to (torchvision's layout, so a
torchvision download is found by pointing data.root at its root). With `download=True`, the official tarball is
fetched, checked against its published MD5 and the six batch files are extracted, each moved into place only once
complete. The batches are pickles; they are read with an unpickler that only builds numpy arrays, lists and dicts,
so a crafted file cannot run code (the same rule as every artifact here, which is read with weights_only=True).
"""

from __future__ import annotations

import os
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from lottery.data import idx
from lottery.data.splits import DatasetNotFoundError, Splits

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
FILE_NAMES = (*TRAIN_FILES, TEST_FILE)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # published with the dataset; the one torchvision checks

# open_lth's per-channel normalisation for CIFAR-10 (it uses ImageNet's statistics); kept so results compare with
# open_lth and the LMC paper. CIFAR-10's own train statistics differ by under 0.1 standard deviation.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 10
SIDE = 32
PIXELS = 3 * SIDE * SIDE  # one row of a batch: 1024 red, then 1024 green, then 1024 blue values, each row-major

FIX = (
    f"unpack {ARCHIVE} (https://www.cs.toronto.edu/~kriz/cifar.html) so that these files lie in {{folder}}, "
    f"point data.root at the folder that holds {FOLDER}/, or set data.download=true on a machine with network access"
)


class _ArraysOnly(pickle.Unpickler):
    """Resolves only what a CIFAR batch needs: numpy's array and dtype reconstructors, and `_codecs.encode` (how
    protocol-2 pickles written by Python 3 store bytes). Anything else, e.g. os.system, is refused."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never holds")
        if module.startswith("numpy.core.") and int(np.__version__.split(".")[0]) >= 2:
            module = module.replace("numpy.core.", "numpy._core.")  # numpy 2 renamed it; avoids its warning
        return super().find_class(module, name)


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: (uint8 images (N, 3, 32, 32), int64 labels (N,)); a clear error naming the file otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            # latin1 is how Python 3 reads the Python-2 strings of the official files (torchvision does the same).
            entry = _ArraysOnly(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a readable CIFAR-10 batch ({error}); delete it and unpack {ARCHIVE} again"
        ) from error
    if not isinstance(entry, dict):
        raise ValueError(f"{path} holds a {type(entry).__name__}, not a CIFAR-10 batch dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise ValueError(f"{path} lacks 'data' or 'labels' (keys: {sorted(entry)}); it is not a CIFAR-10 batch")
    data, labels = entry["data"], np.asarray(entry["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' should be uint8 of shape (N, {PIXELS}), got {got}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path} has {len(data)} images but labels of shape {labels.shape} ({labels.dtype})")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path} has label {int(labels.max())}, outside 0..{NUM_CLASSES - 1}")
    return data.reshape(-1, 3, SIDE, SIDE), labels.astype(np.int64)


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float32, per channel: the float32 ops of torchvision's ToTensor then Normalize."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def pad_value() -> tuple[float, ...]:
    """A black pixel after normalisation, per channel, in float32 like the images (see Splits.pad_value)."""
    return tuple(normalise(np.zeros((1, 3, 1, 1), dtype=np.uint8)).flatten().tolist())


def _missing(folder: Path) -> list[str]:
    return [name for name in FILE_NAMES if not (folder / name).is_file()]


def download(root: Path) -> None:
    """Fetch the official tarball into `root`, verify its MD5 and extract the batch files into root/FOLDER."""
    folder, archive = root / FOLDER, root / ARCHIVE
    fix = FIX.format(folder=folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not archive.is_file() or idx.file_md5(archive) != ARCHIVE_MD5:
        idx.download_verified([URL], archive, ARCHIVE_MD5, fix=fix)
    # Extract only the six known members, each by name into `folder`: no path from the archive is ever used.
    with tarfile.open(archive, "r:gz") as tar:
        for name in FILE_NAMES:
            try:
                member = tar.getmember(f"{FOLDER}/{name}")
            except KeyError:
                raise DatasetNotFoundError(folder, [name], reason=f"{archive} lacks {FOLDER}/{name}", fix=fix) from None
            source = tar.extractfile(member)  # None for links and folders: never followed
            if source is None:
                reason = f"{archive}: {member.name} is not a regular file"
                raise DatasetNotFoundError(folder, [name], reason=reason, fix=fix)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(source.read())
                os.replace(tmp, folder / name)
            finally:
                Path(tmp).unlink(missing_ok=True)
    archive.unlink()  # 170 MB the batch files now hold


def load_cifar10(root: str | Path, download_missing: bool = False) -> Splits:
    """CIFAR-10's 50,000 training and 10,000 test images, normalised per channel (open_lth's constants)."""
    root = Path(root).expanduser()
    folder = root / FOLDER
    missing = _missing(folder)
    if missing and download_missing:
        download(root)
        missing = _missing(folder)
    if missing:
        raise DatasetNotFoundError(
            folder, missing, reason=f"CIFAR-10 batch files are missing from {folder}", fix=FIX.format(folder=folder)
        )
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_images, test_labels = read_batch(folder / TEST_FILE)
    return Splits(
        x_train=normalise(np.concatenate([images for images, _ in train])),
        y_train=torch.from_numpy(np.concatenate([labels for _, labels in train])),
        x_test=normalise(test_images),
        y_test=torch.from_numpy(test_labels),
        num_classes=NUM_CLASSES,
        pad_value=pad_value(),
    )
