"""Control branches, trained beside the trunk's levels from what the trunk left on disk (the trunk is never retrained):

    random_reinit  the trunk's level-L mask, trained from a fresh random initialisation (another seed's theta)
    random_prune   a random mask with exactly the trunk's level-L per-layer densities, from the trunk's rewind point
    oneshot        the dense trained weights (level 0) pruned straight to the level-L target, from the rewind point

A ticket is only a ticket if it beats random_reinit and random_prune at the same density; oneshot asks whether the
iterations of IMP matter. Outputs: seed_<s>/branch_<name>/level_<L>/, the same files as a trunk level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.overlap import random_mask_like
from lottery.core.pruning import prune

if TYPE_CHECKING:
    from lottery.imp import Setup, Start
    from lottery.training.tracking import Tracker

BRANCHES = ("random_reinit", "random_prune", "oneshot")


def branch_seed(seed: int, branch: str, level: int = 0) -> int:
    """A seed for a branch's randomness, distinct from every trunk seed's stream."""
    tag = BRANCHES.index(branch) + 1
    return int(np.random.SeedSequence([seed, tag, level]).generate_state(1, dtype=np.uint64)[0] >> 1)


def branch_mask(setup: Setup, branch: str, level: int) -> M.Mask:
    if setup.cfg.pruning.strategy == "structured":  # unit-level controls (lottery/structured/plan.py)
        from lottery.structured.plan import branch_mask as structured_branch_mask

        return structured_branch_mask(setup, branch, level)
    trunk = artifacts.load_torch(setup.paths.level(level).mask, "trunk mask")
    if branch == "random_reinit":
        return trunk
    if branch == "random_prune":
        return random_mask_like(trunk, torch.Generator().manual_seed(branch_seed(setup.cfg.seed, branch, level)))
    if branch == "early_bird":
        from lottery.branches.early_bird import early_bird_mask

        return early_bird_mask(setup, level)
    dense_trained = artifacts.load_torch(setup.paths.level(0).weights, "dense trained weights")
    dense = {n: torch.ones(shape, dtype=torch.bool) for n, shape in setup.shapes.items()}
    return prune(dense_trained, dense, setup.plan, level)


def branch_start(setup: Setup, branch: str) -> Start:
    from lottery.imp import Start

    if branch == "random_reinit":
        fresh = setup.network(seed=branch_seed(setup.cfg.seed, branch))
        return Start(weights={k: v.detach().clone() for k, v in fresh.state_dict().items()})
    return Start(checkpoint=setup.paths.rewind)


def branch_folder(cfg: Any) -> str:
    """The folder (and W&B run) name of the configured branch: its name, plus for early_bird every setting that differs
    from its default, so that a sweep over them keeps each search apart (branch_early_bird_threshold0.02/)."""
    if cfg.branch != "early_bird":
        return cfg.branch
    import dataclasses

    from lottery.config import EarlyBirdConfig

    changed = [
        f"_{f.name}{getattr(cfg.early_bird, f.name)}"
        for f in dataclasses.fields(EarlyBirdConfig)
        if getattr(cfg.early_bird, f.name) != f.default
    ]
    return "early_bird" + "".join(changed)


def run_branch(setup: Setup, branch: str, tracker: Tracker, folder: str | None = None) -> list[dict[str, Any]]:
    """Train (or resume) the branch at every trunk level from 1 on, in branch_<folder>/ (default: the branch's name);
    the trunk's levels must be finished."""
    from lottery.imp import finish_level, fit_level, write_levels_csv

    paths = setup.paths
    folder = folder or branch
    rows = []
    for level in range(1, setup.levels + 1):
        if not paths.level(level).done:
            raise artifacts.ArtifactError(
                f"branch={branch} needs the trunk's level {level} in {paths.level(level).dir}, which is not finished"
            )
        lp = paths.branch_level(folder, level)
        if lp.done:
            rows.append(artifacts.read_json(lp.metrics, "branch level metrics"))
            continue
        if lp.mask.exists():
            mask = artifacts.load_torch(lp.mask, "branch mask")
        else:
            mask = branch_mask(setup, branch, level)
            artifacts.save_torch(mask, lp.mask)
        module = fit_level(setup, lp, level, mask, branch_start(setup, branch), tracker)
        rows.append(finish_level(setup, level, lp, module, mask, tracker, key=False))
        write_levels_csv(paths.branch_dir(folder) / "levels.csv", rows)
    if rows:
        write_levels_csv(paths.branch_dir(folder) / "levels.csv", rows)
    return rows
