"""A CIFAR-10-shaped dataset generated in memory (no files, no network): for the GPU smoke test and for tests.

Each of the 10 classes has a fixed smooth colour pattern (a random 3x4x4 grid upsampled to 32x32); an example is
its class's pattern times SIGNAL plus unit Gaussian noise on every pixel. A network learns it in a few hundred steps,
so accuracy far above chance shows training works, but no accuracy on it means anything about CIFAR-10. The data is
a fixed function of `seed` (like a dataset on disk, it does not change with the run seed).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lottery.data.splits import Splits

NUM_CLASSES = 10
SHAPE = (3, 32, 32)
SIGNAL = 0.5  # pattern amplitude against noise of standard deviation 1
TEST_SHARE = 6  # one example in 6 is a test example: 60,000 -> 50,000 train + 10,000 test, as in CIFAR-10
_CHUNK = 8192  # examples per in-place add, so generating 60,000 never holds a second full copy


def load_synthetic_cifar10(num_samples: int = 60000, seed: int = 0) -> Splits:
    if num_samples < 2 * TEST_SHARE:
        raise ValueError(
            f"data.num_samples={num_samples} is too small for synthetic_cifar10: it needs at least {2 * TEST_SHARE} "
            "(one in 6 becomes a test example)"
        )
    generator = torch.Generator().manual_seed(seed)  # private: loading data leaves torch's global RNG alone
    coarse = torch.randn(NUM_CLASSES, SHAPE[0], 4, 4, generator=generator)
    patterns = F.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=False)
    labels = torch.randint(0, NUM_CLASSES, (num_samples,), generator=generator)
    x = torch.randn(num_samples, *SHAPE, generator=generator)
    for start in range(0, num_samples, _CHUNK):
        stop = start + _CHUNK
        x[start:stop].add_(patterns[labels[start:stop]], alpha=SIGNAL)
    n_test = num_samples // TEST_SHARE
    n_train = num_samples - n_test
    return Splits(
        x_train=x[:n_train],
        y_train=labels[:n_train],
        x_test=x[n_train:],
        y_test=labels[n_train:],
        num_classes=NUM_CLASSES,
    )
