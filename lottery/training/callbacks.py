"""The level progress bar of a fit's Trainer (its checkpoints: lottery/training/checkpoints.py)."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


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
