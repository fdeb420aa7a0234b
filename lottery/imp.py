"""The IMP driver: a plain loop over levels, one fresh Trainer.fit per level.

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
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate

from lottery import data as datasets
from lottery.config import LotteryConfig
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.duration import steps
from lottery.core.hashing import digest, hash_inputs
from lottery.core.lr_schedule import lr_multiplier
from lottery.core.pruning import PruningPlan, prune
from lottery.data.datamodule import TensorDataModule
from lottery.guard import check_output_folder, estimate_bytes
from lottery.core.layout import RunPaths
from lottery.training.fit import (
    Start,
    finish_level,
    fit_level,
    without_name,
    write_levels_csv,
)
from lottery.reuse import reuse_level
from lottery.training.tracking import Tracker
from lottery.validate import check_augment, check_levels, check_steps, sparsity_schedule, validate

# Each level's Trainer starts mid-"epoch" when it resumes at step k; our batches are a function of the step (see
# lottery/data/batches.py), so Lightning's warning about non-resumable dataloaders does not apply.
warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*is a non-default precision.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")  # Lightning vs torch
# Lightning's per-fit banners (GPU available, restoring states...) repeat every level; the driver says what matters.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def experiment_hash(cfg: LotteryConfig) -> tuple[str, dict[str, Any]]:
    inputs = hash_inputs(cfg)
    return digest(inputs), inputs


@dataclass
class Setup:
    """What every level of one (config, seed) run shares."""

    cfg: LotteryConfig
    model_cfg: dict[str, Any]
    optim_cfg: dict[str, Any]
    datamodule: TensorDataModule
    total_steps: int
    rewind_step: int
    eval_every: int
    checkpoint_every: int
    plan: PruningPlan
    levels: int  # pruning levels after level 0, resolved from `levels` and the schedule
    paths: RunPaths
    base_inputs: dict[str, Any]  # hashed settings other than the sparsity schedule
    shapes: dict[str, tuple[int, ...]]  # shape of each pruned weight

    @property
    def sizes(self) -> dict[str, int]:
        return {n: math.prod(shape) for n, shape in self.shapes.items()}

    def level_key(self, level: int) -> str:
        """What a level's results depend on: level 0 on the base settings only; level L also on the exact number of
        weights kept at levels 1..L. Schedules that agree on their first levels share them (see lottery/reuse.py)."""
        if level == 0:
            return digest({"base": self.base_inputs})
        counts = [self.plan.keep_counts(self.sizes, lvl) for lvl in range(1, level + 1)]
        return digest(
            {"base": self.base_inputs, "scope": self.plan.scope, "layers": self.plan.layers, "counts": counts}
        )

    def network(self, seed: int | None = None) -> torch.nn.Module:
        return build_network(self.model_cfg, self.datamodule, seed)

    def lr_lambda(self):
        s = self.cfg.schedule
        spe = self.datamodule.steps_per_epoch
        return lr_multiplier(
            s.name,
            self.total_steps,
            warmup_steps=steps(s.warmup, spe),
            milestones=[steps(m, spe) for m in s.milestones],
            gamma=s.gamma,
        )


def build_network(model_cfg: dict[str, Any], datamodule: TensorDataModule, seed: int | None = None) -> torch.nn.Module:
    if seed is not None:
        torch.manual_seed(seed)  # theta_0 is a function of the seed: replicates are reproducible
    return instantiate(
        without_name(model_cfg), input_shape=datamodule.input_shape, num_classes=datamodule.num_classes, _convert_="all"
    )


def prepare(cfg: LotteryConfig, model_cfg: dict, optim_cfg: dict) -> Setup:
    """Validate, load data, build the pruning plan and claim the output folder; no training yet."""
    validate(cfg)
    splits = datasets.load(
        cfg.data.name,
        root=cfg.data.root,
        download=cfg.data.download,
        num_samples=cfg.data.num_samples,
        settings=cfg.data,
    )
    check_augment(cfg, splits.input_shape)
    datamodule = TensorDataModule(
        splits,
        cfg.data.val_size,
        cfg.data.split_seed,
        cfg.train.batch_size,
        cfg.seed,
        total_steps=0,
        augment=cfg.data.augment,
    )
    spe = datamodule.steps_per_epoch
    total, rewind = steps(cfg.train.duration, spe), steps(cfg.rewind.step, spe)
    check_steps(cfg, total, rewind)
    datamodule.total_steps = total
    h, inputs = experiment_hash(cfg)
    p = cfg.pruning
    weights = M.prunable_weights(build_network(model_cfg, datamodule))
    weight_names = list(weights)
    schedule = sparsity_schedule(cfg)
    plan = PruningPlan.build(weight_names, p.scope, p.fraction, p.overrides, p.ignore, schedule=schedule)
    setup = Setup(
        cfg=cfg,
        model_cfg=model_cfg,
        optim_cfg=optim_cfg,
        datamodule=datamodule,
        total_steps=total,
        rewind_step=rewind,
        eval_every=steps(cfg.train.eval_every, spe),
        checkpoint_every=steps(cfg.train.checkpoint_every, spe),
        plan=plan,
        levels=schedule.resolve_levels(cfg.levels),
        paths=RunPaths(root=cfg.root, name=cfg.name, hash=h, seed=cfg.seed),
        base_inputs={k: v for k, v in inputs.items() if not k.startswith("pruning.")} | {"strategy": p.strategy},
        shapes={n: tuple(weights[n].shape) for n in plan.layers},
    )
    if p.strategy == "structured":  # whole heads and MLP units (lottery/structured/plan.py)
        from lottery.structured.plan import configure

        configure(setup, weights)
    check_levels(cfg, setup.levels)
    num_parameters = sum(p.numel() for p in build_network(model_cfg, datamodule).parameters())
    check_output_folder(setup.paths.seed_dir, estimate_bytes(num_parameters, setup.levels))
    claim(setup.paths, inputs)
    return setup


def claim(paths: RunPaths, inputs: dict[str, Any]) -> None:
    """Record what the hash folder holds; refuse to mix in results of a different configuration."""
    if paths.hash_file.exists():
        existing = artifacts.read_json(paths.hash_file, "hash record")
        if existing != inputs:
            raise artifacts.ArtifactError(
                f"{paths.hash_file} records settings {existing}, but this run's are {inputs}: the folder holds "
                "results of another configuration. Nothing was changed; move that folder aside or use another root."
            )
    else:
        artifacts.write_json(inputs, paths.hash_file)


def level_mask(setup: Setup, level: int) -> M.Mask:
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
        mask = {n: torch.ones(shape, dtype=torch.bool) for n, shape in setup.shapes.items()}
    else:
        prev = setup.paths.level(level - 1)
        trained = artifacts.load_torch(prev.weights, "trained weights")
        previous_mask = artifacts.load_torch(prev.mask, "mask")
        if setup.cfg.pruning.strategy == "structured":  # whole units, ranked by structured.score
            mask = setup.plan.prune(trained, previous_mask, level)
        else:
            mask = prune(trained, previous_mask, setup.plan, level)
    artifacts.save_torch(mask, lp.mask)
    return mask


def trunk_start(setup: Setup, level: int) -> Start:
    """The IMP trunk: level 0 from theta_0; later levels by the configured rewind mode."""
    if level == 0:
        return Start()
    mode = setup.cfg.rewind.mode
    if mode == "weights":
        return Start(checkpoint=setup.paths.rewind)
    previous = artifacts.load_torch(setup.paths.level(level - 1).weights, "trained weights")
    if mode == "lr":
        return Start(checkpoint=setup.paths.rewind, weights=previous)
    # finetune: the trained weights, the schedule's final LR, a fresh optimizer, steps counted from 0
    return Start(weights=previous, constant_lr=setup.lr_lambda()(setup.total_steps))


def train_level(setup: Setup, level: int, mask: M.Mask, tracker: Tracker) -> dict[str, Any]:
    """Train level `level` of the IMP trunk."""
    if level > 0 and not setup.paths.rewind.exists() and setup.cfg.rewind.mode in ("weights", "lr"):
        raise artifacts.ArtifactError(
            f"{setup.paths.rewind} is missing but level {level} must rewind to it; delete "
            f"{setup.paths.level(0).dir} to retrain level 0 and recreate it"
        )
    lp = setup.paths.level(level)
    if level == 0 and not setup.paths.init.exists():  # theta_0 itself, whatever the rewind step (for analyses)
        artifacts.save_torch(setup.network(seed=setup.cfg.seed).state_dict(), setup.paths.init)
    module = fit_level(setup, lp, level, mask, trunk_start(setup, level), tracker, capture_rewind=level == 0)
    return finish_level(setup, level, lp, module, mask, tracker)


def run_trunk(setup: Setup, tracker: Tracker) -> list[dict[str, Any]]:
    paths = setup.paths
    rows: list[dict[str, Any]] = []
    for level in range(setup.levels + 1):
        lp = paths.level(level)
        if lp.done:
            rows.append(artifacts.read_json(lp.metrics, "level metrics"))
            continue
        reused = reuse_level(setup, level)
        if reused is not None:
            rows.append(reused)
            tracker.log_level(reused)
            continue
        mask = level_mask(setup, level)
        rows.append(train_level(setup, level, mask, tracker))
        write_levels_csv(paths.levels_csv, rows)
    write_levels_csv(paths.levels_csv, rows)
    return rows
