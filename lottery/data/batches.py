"""Training batches as a pure function of the optimizer step: the data order of a run is (seed, step) -> batch.

This is what makes rewinding and resuming exact: restoring the step restores the data order, with no iterator state
to save. Epoch e is a fresh permutation drawn from a generator seeded with (seed, e); step t takes batch t mod S of
epoch t div S, S = steps per epoch (the last partial batch of each epoch is dropped so every step sees `batch_size`
examples). With `augment`, each batch of images is randomly cropped and flipped (lottery/data/augment.py) with draws
that are themselves a function of (seed, epoch), so an augmented batch is still a function of (seed, step). The
tensors stay where they are (CPU, or the GPU for the fast path): no DataLoader workers, no collation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from lottery.core.seeds import derive_seed
from lottery.data.augment import crop_flip, epoch_draws


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    # derive_seed mixes (seed, epoch) so neighbouring seeds never share an epoch's order.
    state = derive_seed(seed, epoch)
    return torch.randperm(n, generator=torch.Generator().manual_seed(state))


def from_step_zero() -> int:
    return 0


class StepBatches:
    """An iterable over the batches of steps [start_step(), total_steps).

    `start_step` is read when iteration begins, after Lightning has restored a checkpoint's global step, so the same
    object serves a fresh level, a rewound level (starting at k) and a resumed one. `len` is the full level length,
    which is what Lightning's progress tracking counts against.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        total_steps: int,
        start_step: Callable[[], int] | None = None,
        augment: bool = False,
        pad_value: torch.Tensor | None = None,
    ) -> None:
        if batch_size > len(x):
            raise ValueError(
                f"train.batch_size={batch_size} exceeds the {len(x)} training examples; lower it or use more data"
            )
        if augment and x.dim() != 4:
            raise ValueError(
                f"data.augment=true crops and flips images shaped (C, H, W), but these examples are shaped "
                f"{tuple(x.shape[1:])}; set data.augment=false for this dataset"
            )
        self.augment = augment
        self.pad_value = pad_value  # per channel, on x's device (see Splits.pad_value); None pads with zeros
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.seed = seed
        self.total_steps = total_steps
        self.start_step = start_step or from_step_zero  # a module-level function: DDP pickles it
        self.steps_per_epoch = len(x) // batch_size

    def __len__(self) -> int:
        return self.total_steps

    def _epoch(self, epoch: int, cache: dict | None) -> dict:
        """The epoch's permutation (and augmentation draws), made on the CPU and moved to the data's device once."""
        if cache is not None and cache.get("epoch") == epoch:
            return cache
        state = {"epoch": epoch, "perm": epoch_permutation(len(self.x), self.seed, epoch).to(self.x.device)}
        if self.augment:
            state["draws"] = epoch_draws(len(self.x), self.seed, epoch).to(self.x.device)
        if cache is not None:
            cache.clear()
            cache.update(state)
        return state

    def indices(self, step: int, _cache: dict | None = None) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        return self._epoch(epoch, _cache)["perm"][i * self.batch_size : (i + 1) * self.batch_size]

    def batch(
        self, step: int, _cache: dict | None = None, rank: int = 0, world: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (inputs, labels) of optimizer step `step`: a pure function of (seed, step). Under DDP, rank r gets
        positions r, r + world, ... of the global batch, each augmented exactly as in a single-process run."""
        epoch, i = divmod(step, self.steps_per_epoch)
        state = self._epoch(epoch, _cache)
        positions = slice(i * self.batch_size + rank, (i + 1) * self.batch_size, world)
        idx = state["perm"][positions]
        x = self.x[idx]
        if self.augment:
            x = crop_flip(x, state["draws"][positions], fill=self.pad_value)
        return x, self.y[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Under DDP each process takes its slice of the global batch (examples rank, rank + world, ...), so the
        # averaged gradient is the global batch's and the data order stays a function of the step alone.
        rank, world = distributed_rank()
        cache: dict = {}
        for step in range(self.start_step(), self.total_steps):
            yield self.batch(step, cache, rank, world)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process in the default process group; (0, 1) outside distributed training."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
