"""scikit-learn's 8x8 handwritten digits (1797 images): ships with sklearn, so it works offline and in tests."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as _sklearn_load_digits

from lottery.data.splits import Splits

_NUM_CLASSES = 10
_MAX_PIXEL = 16.0  # the dataset's pixels are counts in 0..16


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Splits:
    """Split the digits into train/test with a seeded permutation and standardize with the train split's statistics.

    Images come back as (N, 1, 8, 8) so the same conv and MLP models used for MNIST accept them.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be strictly between 0 and 1, e.g. 0.2")

    bunch = _sklearn_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / _MAX_PIXEL
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)

    # A private generator keeps the split fixed for a given seed without touching torch's global RNG.
    generator = torch.Generator().manual_seed(int(split_seed))
    order = torch.randperm(len(labels), generator=generator)
    num_test = int(round(len(labels) * test_fraction))
    if num_test == 0 or num_test == len(labels):
        raise ValueError(f"test_fraction={test_fraction} leaves an empty train or test split of {len(labels)} images")
    test_idx, train_idx = order[:num_test], order[num_test:]

    x_train, x_test = images[train_idx], images[test_idx]
    # Statistics from the train split only, so nothing about the test images leaks into preprocessing.
    mean, std = x_train.mean(), x_train.std()
    return Splits(
        x_train=(x_train - mean) / std,
        y_train=labels[train_idx],
        x_test=(x_test - mean) / std,
        y_test=labels[test_idx],
        num_classes=_NUM_CLASSES,
    )
