"""Data-parallel training of a level (trainer=ddp), on Lightning's DDP strategy with spawned workers.

Why spawned workers: the IMP driver is one process that prunes, rewinds and writes artifacts between fits. With
Lightning's default DDP launcher every rank would re-run the whole command (and the driver with it); with spawned
workers only `Trainer.fit` is distributed. So the mask and the rewind point are made once, in the driver, and reach
every rank inside the pickled LightningModule; every rank applies the same mask after every step; rank 0's trained
weights come back to the driver (Lightning's spawn launcher), which alone writes the level's artifacts. Inside a fit,
the resume checkpoints are written by rank 0 only (lottery/training/checkpoints.py: save_split).

Each rank trains on its own slice of every global batch (lottery/data/batches.py), so `train.batch_size` stays the
global batch and a DDP run follows the single-process run up to floating-point summation order.
"""

from __future__ import annotations

from typing import Any

STRATEGIES = ("auto", "ddp")


def strategy(trainer_cfg: Any) -> Any:
    """Lightning's strategy argument for trainer.strategy."""
    if trainer_cfg.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(start_method="spawn")
    return "auto"
