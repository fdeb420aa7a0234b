"""The IMP driver: a plain loop over levels, one fresh Trainer.fit per level (of one seed, or of several in lock step).

    level 0: train the dense network from its seeded initialisation theta_0, saving the full state at step k
    level L: prune level L-1's trained weights (masks only shrink), rewind the survivors, train again

Rewind modes: `weights` starts level L from the step-k checkpoint with its weights times the mask (k = 0 is the
original LTH reset); `lr` keeps level L-1's trained weights but restarts from step k's LR schedule, optimizer state
and data order (Renda et al. 2020); `finetune` keeps the trained weights and trains at the schedule's final LR.

Every level's artifacts are written atomically and a finished level is skipped, so re-running the same command
resumes; an interrupted level continues from its last checkpoint. Nothing here mutates a model inside a fit (the
mistake of Lightning's ModelPruning callback): pruning happens between fits, on weights read back from disk.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lottery.core import artifacts
from lottery.core import masks as M
from lottery.reuse import reuse_level
from lottery.setup import Setup
from lottery.training import fit, progress
from lottery.training.loop import lock_step
from lottery.training.starts import check_rewind_point, ticket_start
from lottery.training.tracking import Tracker

# Each level's Trainer starts mid-"epoch" when it resumes at step k; our batches are a function of the step (see
# lottery/data/batches.py), so Lightning's warning about non-resumable dataloaders does not apply.
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*is a non-default precision.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")  # Lightning vs torch
# Lightning's per-fit banners (GPU available, restoring states...) repeat every level; the driver says what matters.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def level_mask(setup: Setup, level: int) -> M.Mask:
    """Level `level`'s mask: read back if it is on disk, else made (dense at level 0, pruned from level L-1) and
    saved before training, so a resumed level trains with exactly the mask it started with."""
    lp = setup.paths.level(level)
    if lp.mask.exists():
        mask = artifacts.load_torch(lp.mask, "mask")
        if not isinstance(mask, dict) or set(mask) != set(setup.plan.layers):
            raise artifacts.ArtifactError(
                f"{lp.mask} covers layers {sorted(mask) if isinstance(mask, dict) else type(mask).__name__}, but "
                f"this configuration prunes {sorted(setup.plan.layers)}. Move the level folder aside and re-run."
            )
        M.check_compatible(mask, M.prunable_weights(setup.network()), source=str(lp.mask))
        return mask
    if level == 0:
        mask = setup.dense_mask()
    else:
        check_rewind_point(setup, level)  # before the mask is saved: a refusal leaves the run folder as it was
        prev = setup.paths.level(level - 1)
        trained = artifacts.load_torch(prev.weights, "trained weights")
        mask = setup.plan.prune(trained, artifacts.load_torch(prev.mask, "mask"), level)
    artifacts.save_torch(mask, lp.mask)
    return mask


def level_fit(setup: Setup, level: int, mask: M.Mask) -> fit.LevelFit:
    """What training level `level` of the IMP trunk needs: its folder, mask and start (saving theta_0 first)."""
    check_rewind_point(setup, level)
    if level == 0 and not setup.paths.init.exists():  # theta_0 itself, whatever the rewind step (for analyses)
        artifacts.save_torch(setup.network(seed=setup.cfg.seed).state_dict(), setup.paths.init)
    return fit.LevelFit(setup.paths.level(level), level, mask, ticket_start(setup, level), capture_rewind=level == 0)


def known_level(setup: Setup, level: int, tracker: Tracker) -> dict[str, Any] | None:
    """A level that needs no training: finished earlier, or reused from a schedule sharing it; None otherwise."""
    lp = setup.paths.level(level)
    if lp.done:
        row = artifacts.read_json(lp.metrics, "level metrics")
        progress.say_known_level(row)
        return row
    reused = reuse_level(setup, level)
    if reused is not None:
        tracker.log_level(reused)
        progress.say_known_level(reused)
    return reused


def run_trunk(setup: Setup, tracker: Tracker) -> list[dict[str, Any]]:
    """One seed's IMP trunk: run_trunks of one."""
    return run_trunks([setup], [tracker])[0]


def run_trunks(setups: list[Setup], trackers: list[Tracker]) -> list[list[dict[str, Any]]]:
    """The IMP trunks of one or more seeds in lock step: each level's pending seeds train as one stack
    (lottery/training/fit.py), each seed with its own levels, masks, starts and files; one seed is a stack of one."""
    return lock_step(
        setups,
        trackers,
        range(setups[0].levels + 1),
        known=known_level,
        spec_of=lambda setup, level: level_fit(setup, level, level_mask(setup, level)),
        csv_of=lambda setup: setup.paths.levels_csv,
        label_of=lambda setup: f"seed {setup.cfg.seed}",
    )
