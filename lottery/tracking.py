"""Loggers for a run: W&B (offline by default), Lightning's CSVLogger, or none.

One W&B run per (experiment hash, seed), opened once and shared by every level's Trainer, with an id derived from the
output folder so a resumed run keeps logging to the same W&B run. W&B trouble never stops a run: it is reported once
and the run continues with its local artifacts, which are complete on their own.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from lottery.config import LotteryConfig
from lottery.layout import RunPaths


def run_id(paths: RunPaths, branch: str = "trunk") -> str:
    key = f"{paths.name}/{paths.hash}/seed_{paths.seed}/{branch}"
    return f"{paths.hash}-s{paths.seed}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class Tracker:
    def __init__(self, cfg: LotteryConfig, paths: RunPaths, resolved: dict[str, Any]) -> None:
        self.cfg, self.paths = cfg, paths
        self.run = None
        if cfg.logger.kind == "wandb" and cfg.logger.mode != "disabled":
            self.run = self._open_wandb(resolved)

    def _open_wandb(self, resolved: dict[str, Any]):
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            return wandb.init(
                project=self.cfg.logger.project,
                entity=self.cfg.logger.entity,
                dir=str(self.paths.seed_dir),
                id=run_id(self.paths),
                name=f"{self.paths.name}/{self.paths.hash}/seed_{self.paths.seed}",
                group=self.paths.hash,
                job_type="trunk",
                tags=[f"model:{self.cfg.model.name}", f"data:{self.cfg.data.name}", f"seed:{self.cfg.seed}"],
                config=resolved,
                mode=self.cfg.logger.mode,
                resume="allow",
                reinit="finish_previous",
            )
        except Exception as err:  # no network, bad credentials, a broken install: report once, keep training
            warnings.warn(
                f"W&B could not start ({type(err).__name__}: {err}); the run continues and writes its results to "
                f"{self.paths.seed_dir} only. Use logger=csv or logger=none to silence this.",
                stacklevel=2,
            )
            return None

    def level_loggers(self, level: int) -> list[Logger]:
        if self.run is not None:
            return [WandbLogger(experiment=self.run)]
        if self.cfg.logger.kind == "csv":
            return [CSVLogger(save_dir=str(self.paths.seed_dir / "logs"), name="", version=f"level_{level}")]
        return []

    def log_level(self, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({f"imp/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        except Exception as err:
            warnings.warn(f"W&B logging failed ({err}); local results are unaffected", stacklevel=2)
            self.run = None

    def finish(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as err:
                warnings.warn(f"W&B finish failed ({err}); local results are unaffected", stacklevel=2)
            self.run = None
