"""Reuse of finished levels across sparsity schedules.

Two schedules that keep exactly the same number of weights at their first k levels (global_20 and a densities list
starting [0.8, 0.64], or any two schedules at level 0) produce bit-identical levels 0..k, given the same other
settings and seed. Each finished level records a `level_key` (lottery.setup.Setup.level_key) of exactly what it
depends on; before training a level, the driver looks for a finished level with the same key in the other hash
folders of the same experiment name and seed, and copies it instead of training it again.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from lottery.core import artifacts

if TYPE_CHECKING:
    from lottery.setup import Setup


def find_twin(setup: Setup, level: int):
    """A finished level elsewhere with this level's key, or None."""
    key = setup.level_key(level)
    own = setup.paths.seed_dir.resolve()
    for hash_dir in sorted(p for p in setup.paths.experiment.parent.iterdir() if p.is_dir()):
        other = dataclasses.replace(setup.paths, hash=hash_dir.name)
        candidate = other.level(level)
        if not candidate.done or other.seed_dir.resolve() == own:
            continue
        try:
            metrics = artifacts.read_json(candidate.metrics, "level metrics")
        except artifacts.ArtifactError:
            continue  # an unreadable twin is no twin; the level is trained here instead
        if metrics.get("level_key") == key and (level > 0 or other.rewind.is_file()):
            return candidate.dir, metrics
    return None


def reuse_level(setup: Setup, level: int) -> dict[str, Any] | None:
    """Copy a finished twin of `level` into this run's folder; returns its metrics, or None when there is none."""
    twin = find_twin(setup, level)
    if twin is None:
        return None
    source, metrics = twin
    lp = setup.paths.level(level)
    lp.dir.mkdir(parents=True, exist_ok=True)
    if level == 0:
        for name in ("rewind.ckpt", "init.pt"):
            target = setup.paths.seed_dir / name
            if (source.parent / name).is_file() and not target.exists():
                artifacts.copy_file(source.parent / name, target)
    if level == 0:  # the dense mask covers this plan's layers, which the level-0 key does not fix
        mask = setup.dense_mask()
        artifacts.save_torch(mask, lp.mask)
    else:
        artifacts.copy_file(source / "mask.pt", lp.mask)
        mask = artifacts.load_torch(lp.mask, "mask")
    artifacts.copy_file(source / "weights.pt", lp.weights)
    sparsity = setup.plan.report(mask, level)
    artifacts.write_json(sparsity, lp.sparsity)
    metrics = {**metrics, "target_density": sparsity["target_density"], "reused_from": str(source)}
    artifacts.write_json(metrics, lp.metrics)  # last: marks the level finished
    return metrics
