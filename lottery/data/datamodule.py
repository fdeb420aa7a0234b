"""The DataModule: a dataset held in memory, split into train / validation / test tensors.

The validation split is carved from the training data (never the test set, which only scores the final network) with
`split_seed`, the same for every run seed, so seeds are compared on the same examples. On a GPU the six tensors can
move to the device once per run (`to_device`, trainer.data_on_device): batches are then cut, shuffled and augmented
where they live, with no DataLoader workers and no per-step host-to-device copies.
"""

from __future__ import annotations

import copy

import lightning as L
import torch

from lottery.data.batches import StepBatches
from lottery.data.splits import Splits

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


class TensorDataModule(L.LightningDataModule):
    def __init__(
        self,
        splits: Splits,
        val_size: int,
        split_seed: int,
        batch_size: int,
        seed: int,
        total_steps: int = 0,
        augment: bool = False,
    ):
        super().__init__()
        n = len(splits.x_train)
        if not 0 < val_size < n:
            raise ValueError(f"data.val_size={val_size} must lie in (0, {n}), the number of training examples")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
        val_idx, train_idx = order[:val_size], order[val_size:]
        self.x_train, self.y_train = splits.x_train[train_idx], splits.y_train[train_idx]
        self.x_val, self.y_val = splits.x_train[val_idx], splits.y_train[val_idx]
        self.x_test, self.y_test = splits.x_test, splits.y_test
        self.num_classes = splits.num_classes
        self.input_shape = splits.input_shape
        self.task = splits.task  # None: classification (lottery/data/tasks.py)
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.augment = augment
        self.pad_value = None if splits.pad_value is None else torch.tensor(splits.pad_value, dtype=torch.float32)
        if batch_size > len(self.x_train):
            raise ValueError(
                f"train.batch_size={batch_size} exceeds the {len(self.x_train)} training examples left after the "
                f"validation carve (data.val_size={val_size}); lower one of them"
            )

    def replace(self, **changes: int) -> TensorDataModule:
        """A copy sharing the carved tensors, with another `seed` (data order) or `total_steps` (run length): what a
        stage needs differently is a new value, so the run's own datamodule never changes under another stage."""
        unknown = set(changes) - {"seed", "total_steps"}
        if unknown:
            raise TypeError(f"TensorDataModule.replace takes seed and total_steps, not {sorted(unknown)}")
        clone = copy.copy(self)
        for name, value in changes.items():
            setattr(clone, name, value)
        return clone

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // self.batch_size

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to_device(self, device: torch.device, channels_last: bool = False) -> None:
        """Move every split to `device` once (a no-op for tensors already there), images in channels-last layout
        when asked, so convolutions on a channels-last network read them without a per-batch conversion."""
        for name in SPLITS:
            tensor = getattr(self, name).to(device)
            if channels_last and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            setattr(self, name, tensor)
        if self.pad_value is not None:
            self.pad_value = self.pad_value.to(device)

    def train_dataloader(self) -> StepBatches:
        return StepBatches(
            self.x_train,
            self.y_train,
            self.batch_size,
            self.seed,
            self.total_steps,
            start_step=lambda: self.trainer.global_step if self.trainer is not None else 0,
            augment=self.augment,
            pad_value=self.pad_value,
        )
