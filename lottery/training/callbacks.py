"""Callbacks of a level's Trainer: the rewind-point capture, atomic resume checkpoints and the level progress bar."""

from __future__ import annotations

import os
import time
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
    """Saves the level's state to `last.ckpt`, where a killed level resumes: every `every` steps if set, and once
    `seconds` of training have passed since the last save (or the fit's start) if set. A time-chosen step is as
    exact as a fixed one: the saved state is the whole training state at that step, and a level resumes bit for bit
    from any step (tests/test_resume.py). So the clock bounds the work a kill loses without making the result depend
    on it; only which steps were saved varies between runs.

    Under DDP every rank must save together (Lightning's save is collective), so rank 0's clock decides, broadcast
    at each evaluation step only (one small collective per evaluation, not per step)."""

    def __init__(self, path: Path, total_steps: int, every: int | None = None, seconds: float | None = None) -> None:
        self.path = Path(path)
        self.total_steps = total_steps
        self.every = None if every is None else max(1, every)
        self.seconds = seconds
        self._last = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()  # after any restore: the clock counts training, not start-up

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step >= self.total_steps:
            return  # the finished level writes its weights; a checkpoint here would only be deleted
        due = self.every is not None and step % self.every == 0
        if self.seconds is not None and not due:
            due = self._clock_due(trainer, pl_module, step)
        if due:
            save_atomically(trainer, self.path)
            self._last = time.perf_counter()

    def _clock_due(self, trainer, pl_module, step: int) -> bool:
        late = time.perf_counter() - self._last >= self.seconds
        if trainer.world_size == 1:
            return late
        if step % getattr(pl_module, "eval_every", 1):
            return False
        return bool(trainer.strategy.broadcast(late, src=0))


class LevelProgressBar(RichProgressBar):
    """Lightning's rich progress bar, labelled with the IMP level instead of the (single) epoch."""

    def __init__(self, level: int, levels: int, density: float, prefix: str = "") -> None:
        super().__init__(leave=False)  # the level's line (lottery/training/progress.py) stays instead
        self.label = f"{prefix}level {level}/{levels} · density {density:.2%}"

    def _get_train_description(self, current_epoch: int) -> str:
        return self.label

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version means nothing here; the level is in the label
        return metrics
