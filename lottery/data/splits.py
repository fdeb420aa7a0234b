"""The in-memory form every data source returns, and the error raised when a dataset's files are not on disk.

All datasets used here are small enough to hold as whole tensors, so a source returns finished, normalized train and
test tensors; batching and shuffling are left to the data module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Splits:
    x_train: torch.Tensor  # float32, shape (N, *input_shape)
    y_train: torch.Tensor  # int64, shape (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    # Per channel, the value a black (all-zero) pixel has after normalisation: what random-crop padding fills with, so
    # a crop of normalised images equals torchvision's RandomCrop(padding=4) applied before Normalize. None: zeros.
    pad_value: tuple[float, ...] | None = None
    # Loss and metrics for targets that are not one class label per example (lottery/data/tasks.py; in-context prompts).
    # None: classification, cross-entropy and accuracy.
    task: Any = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch dimension (what a model's first layer must accept)."""
        return tuple(self.x_train.shape[1:])


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in the folder it was asked to load from.

    Subclasses FileNotFoundError so callers that already handle missing files keep working; the message carries the
    folder, the missing file names and what to do, because this is usually the first error a new user meets.
    """

    def __init__(
        self, folder: str | Path, missing: Sequence[str], reason: str | None = None, fix: str | None = None
    ) -> None:
        self.folder = Path(folder)
        self.missing = list(missing)
        lines = [
            reason or f"dataset files are missing from {self.folder}",
            f"folder: {self.folder}",
            "missing files: " + ", ".join(self.missing),
            "fix: "
            + (
                fix
                or f"put these files (plain or .gz) in {self.folder}, or set data.download=true on a machine with "
                "network access"
            ),
        ]
        super().__init__("\n".join(lines))
