"""Control branches, trained beside the trunk's levels from what the trunk left on disk (the trunk is never retrained):

    random_reinit  the trunk's level-L mask on a fresh random initialisation (another seed's theta), trained from the
                   rewind step k with the schedule's position and data order at k and a fresh optimizer state
    random_prune   a random mask with exactly the trunk's level-L per-layer densities, retrained as the ticket is
    oneshot        the dense trained weights (level 0) pruned straight to the level-L target, retrained as the ticket

Every control retrains by the ticket's procedure (lottery/training/starts.py: start step, steps, LR schedule position,
optimizer state, data order, evaluation steps) and differs only in its mask or, for random_reinit, its starting
weights; under `lr` and `finetune` the mask is applied to the weights it was drawn from (level L-1's for random_prune,
like the ticket; level 0's for oneshot). random_reinit under `finetune` has no like-for-like meaning and is refused.
A ticket is only a ticket if it beats random_reinit and random_prune at the same density; oneshot asks whether the
iterations of IMP matter. A control is its mask rule and its start (`Control`); `run_control` trains any of them, the
early-bird tickets included (lottery/branches/early_bird.py). Outputs: seed_<s>/branch_<name>/level_<L>/, the same
files as a trunk level. The masks come from the run's pruning plan, so the same rules hold for weight and unit masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lottery.config import ConfigError
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.seeds import derive_seed
from lottery.training import fit
from lottery.training.loop import lock_step
from lottery.training.starts import fresh_start, retrain_start, ticket_start

if TYPE_CHECKING:
    from lottery.branches.spec import BranchSpec
    from lottery.training.tracking import Tracker

# Stream tags of the controls' randomness (seed derivation): fixed numbers, so a control's seeds never change.
STREAMS = {"random_reinit": 1, "random_prune": 2, "oneshot": 3}


def branch_seed(seed: int, branch: str, level: int = 0) -> int:
    """A seed for a control's randomness, distinct from every trunk seed's stream."""
    return derive_seed(seed, STREAMS[branch], level)


@dataclass(frozen=True)
class Control:
    """A control: which mask it trains at level L, and from which start."""

    name: str
    mask: Callable[[BranchSpec, int], M.Mask]
    start: Callable[[BranchSpec, int], fit.Start]

    def run(self, setup: BranchSpec, tracker: Tracker, folder: str | None = None) -> list[dict[str, Any]]:
        return run_control(setup, self, tracker, folder)


def trunk_mask(setup: BranchSpec, level: int) -> M.Mask:
    return artifacts.load_torch(setup.paths.level(level).mask, "trunk mask")


def random_mask(setup: BranchSpec, level: int) -> M.Mask:
    generator = torch.Generator().manual_seed(branch_seed(setup.cfg.seed, "random_prune", level))
    return setup.plan.random_like(trunk_mask(setup, level), generator)


def oneshot_mask(setup: BranchSpec, level: int) -> M.Mask:
    dense_trained = artifacts.load_torch(setup.paths.level(0).weights, "dense trained weights")
    return setup.plan.prune(dense_trained, setup.dense_mask(), level)


def reinit_start(setup: BranchSpec, level: int) -> fit.Start:
    return fresh_start(setup, branch_seed(setup.cfg.seed, "random_reinit"))


def oneshot_start(setup: BranchSpec, level: int) -> fit.Start:
    return retrain_start(setup, setup.paths.level(0).weights)  # the weights its mask was drawn from


def check_reinit(cfg: Any) -> None:
    """random_reinit under fine-tuning would fine-tune random weights at a small constant LR: no control of anything."""
    if cfg.branch == "random_reinit" and cfg.rewind.mode == "finetune":
        raise ConfigError(
            "branch=random_reinit has no like-for-like meaning under rewind.mode=finetune (it would fine-tune a "
            "random initialisation at the fine-tuning LR); use branch=random_prune or oneshot with fine-tuning, or "
            "rewind=weights / rewind=lr for random_reinit"
        )


RANDOM_REINIT = Control("random_reinit", trunk_mask, reinit_start)
RANDOM_PRUNE = Control("random_prune", random_mask, ticket_start)
ONESHOT = Control("oneshot", oneshot_mask, oneshot_start)


def control_fit(setup: BranchSpec, control: Control, folder: str, level: int) -> fit.LevelFit:
    """What training the control's level `level` needs: its folder, its mask (read back, or drawn and saved before
    training so a resumed level keeps it) and its start; the trunk's level must be finished."""
    paths = setup.paths
    if not paths.level(level).done:
        raise artifacts.ArtifactError(
            f"branch={control.name} needs the trunk's level {level} in {paths.level(level).dir}, which is not finished"
        )
    lp = paths.branch_level(folder, level)
    if lp.mask.exists():
        mask = artifacts.load_torch(lp.mask, "branch mask")
    else:
        mask = control.mask(setup, level)
        artifacts.save_torch(mask, lp.mask)
    return fit.LevelFit(lp, level, mask, control.start(setup, level))


def run_control(
    setup: BranchSpec, control: Control, tracker: Tracker, folder: str | None = None
) -> list[dict[str, Any]]:
    """One seed's control: run_controls of one."""
    return run_controls([setup], control, [tracker], folder)[0]


def run_controls(
    setups: list[BranchSpec], control: Control, trackers: list[Tracker], folder: str | None = None
) -> list[list[dict[str, Any]]]:
    """Train (or resume) the control of one or more seeds at every trunk level from 1 on, in branch_<folder>/
    (default: the control's name), each level's pending seeds as one stack (lottery/training/fit.py); the trunks'
    levels must be finished."""
    folder = folder or control.name

    def known(setup: BranchSpec, level: int, tracker: Tracker) -> dict[str, Any] | None:
        lp = setup.paths.branch_level(folder, level)
        return artifacts.read_json(lp.metrics, "branch level metrics") if lp.done else None

    return lock_step(
        setups,
        trackers,
        range(1, setups[0].levels + 1),
        known=known,
        spec_of=lambda setup, level: control_fit(setup, control, folder, level),
        csv_of=lambda setup: setup.paths.branch_dir(folder) / "levels.csv",
        label_of=lambda setup: f"seed {setup.cfg.seed} {folder}",
        key=False,
    )
