"""The DataModule: a dataset held in memory, split into train / validation / test tensors.

The validation split is carved from the training data (never the test set, which only scores the final network) with
`split_seed`, the same for every run seed, so seeds are compared on the same examples.
"""

from __future__ import annotations

import lightning as L
import torch

from lottery.data.batches import StepBatches
from lottery.data.splits import Splits


class TensorDataModule(L.LightningDataModule):
    def __init__(self, splits: Splits, val_size: int, split_seed: int, batch_size: int, seed: int, total_steps: int):
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
        self.task = splits.task  # None: classification (lottery/tasks.py)
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        if batch_size > len(self.x_train):
            raise ValueError(
                f"train.batch_size={batch_size} exceeds the {len(self.x_train)} training examples left after the "
                f"validation carve (data.val_size={val_size}); lower one of them"
            )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // self.batch_size

    def train_dataloader(self) -> StepBatches:
        return StepBatches(
            self.x_train,
            self.y_train,
            self.batch_size,
            self.seed,
            self.total_steps,
            start_step=lambda: self.trainer.global_step if self.trainer is not None else 0,
        )
