"""MNIST-1D (Greydanus, 2020): a tiny procedurally generated 1-D digit dataset, built locally so nothing downloads.

Generating it takes longer than anything else a run does before its first step (thousands of scipy interpolations),
so the generated tensors are kept in `<data.root>/mnist1d/` and read back by every later run: the same bytes, since
the file holds exactly the tensors generation returned, keyed by everything that decides them (sample count, seed,
the mnist1d package's version). A cache that cannot be read is regenerated; one that cannot be written is skipped.
"""

from __future__ import annotations

import random
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from lottery.core import artifacts
from lottery.data.splits import Splits

FIELDS = ("x_train", "y_train", "x_test", "y_test")


def load_mnist1d(num_samples: int = 5000, seed: int = 42, cache_dir: Path | None = None) -> Splits:
    """Generate MNIST-1D with `num_samples` examples (80/20 train/test, as in the package) from `seed`, or read the
    copy a previous run left in `cache_dir` (None: always generate).

    `make_dataset` is used instead of `get_dataset` because the latter downloads a pickle and writes it to the
    working directory. The 5000-sample default with seed 42 matches the package's published dataset.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples={num_samples} is too small: MNIST-1D needs at least one sample per class (10)")
    cache = None if cache_dir is None else Path(cache_dir) / f"mnist1d-n{int(num_samples)}-s{int(seed)}-{_version()}.pt"
    tensors = _read(cache) if cache is not None else None
    if tensors is None:
        tensors = _generate(int(num_samples), int(seed))
        if cache is not None:
            _write(tensors, cache)
    return Splits(**tensors, num_classes=10)


def _generate(num_samples: int, seed: int) -> dict[str, torch.Tensor]:
    from mnist1d.data import get_dataset_args, make_dataset  # imports scipy: only when generating

    args = get_dataset_args(as_dict=False)
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset reseeds numpy's and python's global RNGs; restore them so loading data does not silently change
    # the random stream of whoever called us (e.g. a seeded experiment).
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {
        "x_train": torch.as_tensor(np.asarray(data["x"]), dtype=torch.float32),
        "y_train": torch.as_tensor(np.asarray(data["y"]), dtype=torch.int64),
        "x_test": torch.as_tensor(np.asarray(data["x_test"]), dtype=torch.float32),
        "y_test": torch.as_tensor(np.asarray(data["y_test"]), dtype=torch.int64),
    }


def _version() -> str:
    try:
        return version("mnist1d")
    except PackageNotFoundError:
        return "unknown"


def _read(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        tensors = artifacts.load_torch(path, "MNIST-1D cache")
    except artifacts.ArtifactError:
        return None  # damaged: generate again and replace it
    if not isinstance(tensors, dict) or set(tensors) != set(FIELDS):
        return None
    return tensors


def _write(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        artifacts.save_torch(tensors, path)  # atomic: jobs generating it at once each rename a whole file
    except OSError:
        pass  # a read-only or full data.root: the run goes on with the generated tensors
