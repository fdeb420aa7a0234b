"""Rewinding, in one place: where every level starts, and the rewind point it starts from.

The ticket's retraining procedure under each rewind mode is shared by the trunk and every control and analysis, so
that a control differs from the ticket only in what it changes (its mask or its starting weights):

    rewind.mode   start step   LR schedule          optimizer state          weights masked at the start
    weights       k            from step k          step k's                 the rewind point's (step k)
    lr            k            from step k          step k's                 the weights the mask was drawn from
    finetune      0            constant: the        fresh                    the weights the mask was drawn from
                               fine-tuning LR

Level 0 always starts from theta_0 at step 0. `fresh_start` is random_reinit's: a fresh initialisation trained from
the rewind step k with the schedule's position and data order at k and a fresh optimizer state (open_lth's random
reinitialisation); it has no like-for-like meaning under fine-tuning, where validate refuses it.

The life of the rewind point (`rewind.ckpt`, one per seed):
  captured  during the trunk's level 0 at step k (`LevelFit.capture_rewind`; training/checkpoints.LevelCheckpoints
            saves it, split per replica of a stack), a whole training state: weights, optimizer, LR schedule, data
            order and the step;
  checked   before a level that rewinds writes anything (`check_rewind_point`, called where its mask is made);
  loaded    as the `Start.checkpoint` of a fit (training/fit.fit_stack): LevelModule.on_load_checkpoint puts the
            start weights over the checkpoint's (modes lr and random_reinit), multiplies in the mask and drops the
            optimizer state where `fresh_optimizer` asks; the step, schedule and data order come from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lottery.core import artifacts
from lottery.training.fit import Start

if TYPE_CHECKING:
    from lottery.training.spec import RunSpec


def finetune_multiplier(setup: RunSpec) -> float:
    """The constant LR multiplier of fine-tuning: rewind.finetune_lr over optim.lr when given, else the schedule's
    final multiplier (validate refuses a schedule that ends at 0 without rewind.finetune_lr)."""
    finetune_lr = setup.cfg.rewind.finetune_lr
    if finetune_lr is not None:
        return finetune_lr / setup.optim_cfg["lr"]
    return setup.lr_lambda()(setup.total_steps)


def rewinds(setup: RunSpec, level: int) -> bool:
    """Whether level `level` starts from the rewind point (levels after 0 under rewind.mode weights or lr)."""
    return level > 0 and setup.cfg.rewind.mode in ("weights", "lr")


def check_rewind_point(setup: RunSpec, level: int) -> None:
    """A level that rewinds needs the rewind checkpoint level 0 wrote; refused before anything of the level is
    written (its mask included), so the run folder stays as it was."""
    if rewinds(setup, level) and not setup.paths.rewind.exists():
        raise artifacts.ArtifactError(
            f"{setup.paths.rewind} is missing but level {level} must rewind to it; delete "
            f"{setup.paths.level(0).dir} to retrain level 0 and recreate it (nothing was written)"
        )


def rewind_start(setup: RunSpec, weights: dict | None = None, fresh_optimizer: bool = False) -> Start:
    """A start from the rewind point at step k: its training state, with `weights` over its own if given."""
    return Start(
        checkpoint=setup.paths.rewind, step=setup.rewind_step, weights=weights, fresh_optimizer=fresh_optimizer
    )


def start_step(setup: RunSpec, level: int) -> int:
    """The step level `level` starts from under the run's rewind mode: k when it rewinds, else 0."""
    return setup.rewind_step if rewinds(setup, level) else 0


def retrain_start(setup: RunSpec, source: Path) -> Start:
    """The retraining procedure of a pruned level (L >= 1) under the run's rewind mode. `source`: the weights file
    the mask was drawn from, which `lr` and `finetune` start from (read only then); `weights` restarts from the
    rewind point's own weights instead."""
    mode = setup.cfg.rewind.mode
    if mode == "weights":
        return rewind_start(setup)
    weights = artifacts.load_torch(source, "trained weights")
    if mode == "lr":
        return rewind_start(setup, weights)
    return Start(weights=weights, constant_lr=finetune_multiplier(setup))  # steps counted from 0


def ticket_start(setup: RunSpec, level: int) -> Start:
    """The IMP ticket of `level`: level 0 from theta_0 at step 0; level L from level L-1's trained weights, whose
    magnitudes drew its mask, by the rewind mode."""
    if level == 0:
        return Start()
    return retrain_start(setup, setup.paths.level(level - 1).weights)


def fresh_start(setup: RunSpec, seed: int) -> Start:
    """random_reinit: a fresh initialisation (from `seed`) trained like the ticket from the rewind step k, with the
    schedule's position and the data order at k and a fresh optimizer state."""
    fresh = setup.network(seed=seed)
    weights = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
    return rewind_start(setup, weights, fresh_optimizer=True)
