"""Callbacks of a level's Trainer: the rewind-point capture, atomic resume checkpoints and the level progress bar."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


def save_atomically(trainer: L.Trainer, path: Path) -> None:
    """Lightning's save_checkpoint writes in place; a kill mid-write would leave a truncated file, so write a
    temporary file beside it and rename it over the old one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)


class RewindCapture(L.Callback):
    """Saves the full training state at optimizer step k (weights, optimizer, LR schedule, step and so data order,
    RNG): the point every later level rewinds to. Step 0 is captured before the first update."""

    def __init__(self, path: Path, step: int) -> None:
        self.path = Path(path)
        self.step = step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.step == 0 and trainer.global_step == 0:
            save_atomically(trainer, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.step > 0 and trainer.global_step == self.step:
            save_atomically(trainer, self.path)


class ResumeCheckpoint(L.Callback):
    """Saves the level's state every `every` steps to `last.ckpt`, where a killed level resumes."""

    def __init__(self, path: Path, every: int, total_steps: int) -> None:
        self.path = Path(path)
        self.every = max(1, every)
        self.total_steps = total_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step < self.total_steps:
            save_atomically(trainer, self.path)


class LevelProgressBar(RichProgressBar):
    """Lightning's rich progress bar, labelled with the IMP level instead of the (single) epoch."""

    def __init__(self, level: int, levels: int, density: float, prefix: str = "") -> None:
        super().__init__(leave=True)
        self.label = f"{prefix}level {level}/{levels} · density {density:.2%}"

    def _get_train_description(self, current_epoch: int) -> str:
        return self.label

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version means nothing here; the level is in the label
        return metrics
