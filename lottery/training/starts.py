"""Where a level starts: the ticket's retraining procedure under each rewind mode, shared by the trunk and every
control so that a control differs from the ticket only in what it changes (its mask or its starting weights).

    rewind.mode   start step   LR schedule          optimizer state          weights masked at the start
    weights       k            from step k          step k's                 the rewind point's (step k)
    lr            k            from step k          step k's                 the weights the mask was drawn from
    finetune      0            constant: the        fresh                    the weights the mask was drawn from
                               fine-tuning LR

Level 0 always starts from theta_0 at step 0. `fresh_start` is random_reinit's: a fresh initialisation trained from
the rewind step k with the schedule's position and data order at k and a fresh optimizer state (open_lth's random
reinitialisation); it has no like-for-like meaning under fine-tuning, where validate refuses it.
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


def retrain_start(setup: RunSpec, source: Path) -> Start:
    """The retraining procedure of a pruned level (L >= 1) under the run's rewind mode. `source`: the weights file
    the mask was drawn from, which `lr` and `finetune` start from (read only then); `weights` restarts from the
    rewind point's own weights instead."""
    mode = setup.cfg.rewind.mode
    if mode == "weights":
        return Start(checkpoint=setup.paths.rewind, step=setup.rewind_step)
    weights = artifacts.load_torch(source, "trained weights")
    if mode == "lr":
        return Start(checkpoint=setup.paths.rewind, step=setup.rewind_step, weights=weights)
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
    return Start(checkpoint=setup.paths.rewind, step=setup.rewind_step, weights=weights, fresh_optimizer=True)
