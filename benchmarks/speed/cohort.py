"""(d): a stack of replicas (lottery/training/fit.py: fit_levels), the same level for `REPLICAS` seeds at once.

Each replica is what (b) trains for its seed (config, data, data order, a random mask at the same density), so the
cohort's step trains REPLICAS of (b)'s steps; the table divides by REPLICAS for the cost of one replica-step.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from .framework import compose, load_splits, random_mask
from .nets import density_of
from .timing import Timer

REPLICAS = 8


class CohortRunner:
    def __init__(self, spec: dict[str, Any]) -> None:
        import lottery.setup as setup_module
        from lottery.training import checkpoints
        from lottery.training.module import LevelModule

        self.spec, self.count = spec, 0
        if spec["hp"]["data"] != "mnist1d":
            splits = load_splits(spec["hp"])
            setup_module.datasets.load = lambda *args, **kwargs: splits
        self.evals, self.ckpts = Timer(), Timer()
        LevelModule.evaluate = self.evals.wrap(LevelModule.evaluate)
        checkpoints.save_split = self.ckpts.wrap(checkpoints.save_split)

    def run(self, steps: int) -> dict[str, Any]:
        from omegaconf import OmegaConf

        from lottery.core import masks as M
        from lottery.setup import prepare
        from lottery.training.fit import LevelFit, fit_levels
        from lottery.training.tracking import Tracker

        self.count += 1
        root = Path(self.spec["tmp"]) / f"run{self.count}"
        start = time.perf_counter()
        setups, fits, trackers = [], [], []
        for seed in range(REPLICAS):
            cfg = compose(
                [
                    *self.spec["overrides"],
                    f"seed={seed}",
                    f"train.duration={steps}it",
                    f"root={root}",
                    "logger=none",
                    "trainer.progress_bar=false",
                ]
            )
            settings = OmegaConf.to_object(cfg)
            setup = prepare(
                settings,
                OmegaConf.to_container(cfg.model, resolve=True),
                OmegaConf.to_container(cfg.optim, resolve=True),
            )
            setups.append(setup)
            fits.append(LevelFit(setup.paths.level(1), 1, random_mask(setup.shapes, seed)))
            trackers.append(Tracker(settings, setup.paths, {}, branch="trunk"))
        prepare_seconds = time.perf_counter() - start
        self.evals.reset()
        self.ckpts.reset()
        start = time.perf_counter()
        replicas = fit_levels(setups, fits, trackers)
        seconds = time.perf_counter() - start
        first = replicas[0]
        weights = {n: w.detach() for n, w in M.prunable_weights(first.network).items()}
        result = {
            "steps": steps,
            "seconds": seconds,
            "evals": self.evals.calls,
            "eval_seconds": self.evals.seconds,
            "ckpts": self.ckpts.calls,
            "ckpt_seconds": self.ckpts.seconds,
            "val_loss": first.evaluate(setups[0].datamodule.x_val, setups[0].datamodule.y_val)[1],
            "density": density_of(weights),
            "prepare_seconds": prepare_seconds,
            "replicas": REPLICAS,
        }
        del replicas, setups
        gc.collect()
        return result
