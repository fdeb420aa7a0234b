"""MNIST-1D (Greydanus, 2020): a tiny procedurally generated 1-D digit dataset, built locally so nothing downloads."""

from __future__ import annotations

import random

import numpy as np
import torch
from mnist1d.data import get_dataset_args, make_dataset

from lottery.data.splits import Splits


def load_mnist1d(num_samples: int = 5000, seed: int = 42) -> Splits:
    """Generate MNIST-1D with `num_samples` examples (80/20 train/test, as in the package) from `seed`.

    `make_dataset` is used instead of `get_dataset` because the latter downloads a pickle and writes it to the
    working directory. The 5000-sample default with seed 42 matches the package's published dataset.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples={num_samples} is too small: MNIST-1D needs at least one sample per class (10)")
    args = get_dataset_args(as_dict=False)
    args.num_samples = int(num_samples)
    args.seed = int(seed)

    # make_dataset reseeds numpy's and python's global RNGs; restore them so loading data does not silently change
    # the random stream of whoever called us (e.g. a seeded experiment).
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)

    return Splits(
        x_train=torch.as_tensor(np.asarray(data["x"]), dtype=torch.float32),
        y_train=torch.as_tensor(np.asarray(data["y"]), dtype=torch.int64),
        x_test=torch.as_tensor(np.asarray(data["x_test"]), dtype=torch.float32),
        y_test=torch.as_tensor(np.asarray(data["y_test"]), dtype=torch.int64),
        num_classes=10,
    )
