"""The run's setup: everything every level of one (config, seed) run shares, built once by `prepare` and frozen.

`prepare` validates the config, loads and carves the data, resolves durations to steps, builds the pruning plan
(weights or whole units, one interface: lottery/core/pruning.py `Plan`) and claims the output folder, all before any
training. A later stage that needs something different (another data order, another length) makes a new value
from it (`TensorDataModule.replace`); nothing changes a Setup after it is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from hydra.utils import instantiate

from lottery import data as datasets
from lottery.config import ConfigError, LotteryConfig, without_name
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.artifacts import ArtifactError
from lottery.core.duration import steps
from lottery.core.hashing import digest, hash_inputs
from lottery.core.layout import RunPaths
from lottery.core.lr_schedule import lr_multiplier
from lottery.core.pruning import Plan, PruningPlan
from lottery.core.series import SeriesError, series_steps
from lottery.data.datamodule import TensorDataModule
from lottery.guard import check_output_folder, estimate_bytes
from lottery.structured.plan import StructuredPlan
from lottery.structured.pretrained import scores_as_loaded
from lottery.structured.scoring import UnitScorer
from lottery.structured.series import check_series
from lottery.validate import (
    check_augment,
    check_finetune,
    check_levels,
    check_steps,
    sparsity_schedule,
    validate,
)

# A study of a pretrained model as loaded trains nothing: these settings cannot change what it measures, so its hash
# leaves them out (two studies that differ only in them are one study, in one folder).
TRAINING_ONLY = ("optim.", "train.", "rewind.", "schedule.", "pruning.", "levels")


def experiment_hash(cfg: LotteryConfig) -> tuple[str, dict[str, Any]]:
    inputs = hash_inputs(cfg)
    if scores_as_loaded(cfg):
        inputs = {k: v for k, v in inputs.items() if k == "pruning.strategy" or not k.startswith(TRAINING_ONLY)}
    return digest(inputs), inputs


@dataclass(frozen=True)
class Setup:
    """What every level of one (config, seed) run shares."""

    cfg: LotteryConfig
    model_cfg: dict[str, Any]
    optim_cfg: dict[str, Any]
    datamodule: TensorDataModule
    total_steps: int
    rewind_step: int
    eval_every: int
    checkpoint_every: int | None  # steps between resume checkpoints; None: by the clock only
    plan: Plan
    levels: int  # pruning levels after level 0, resolved from `levels` and the schedule
    paths: RunPaths
    base_inputs: dict[str, Any]  # hashed settings other than the sparsity schedule
    shapes: dict[str, tuple[int, ...]]  # shape of each pruned weight: the keys of every level's mask
    # The network prepare() built, kept for a run that scores a pretrained model as loaded (loading is the slow part
    # of such a run: a dequantized GGUF takes seconds); None for runs that build a fresh network per level.
    loaded: torch.nn.Module | None = field(default=None, compare=False, repr=False)
    series_steps: tuple[int, ...] = ()  # level 0's network kept at these steps (train.save_at, core/series.py)

    @property
    def sizes(self) -> dict[str, int]:
        return {n: math.prod(shape) for n, shape in self.shapes.items()}

    def dense_mask(self) -> M.Mask:
        return M.dense_mask(self.shapes)

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

    def pretrained(self) -> torch.nn.Module:
        """The pretrained network as loaded (the one prepare() built, if kept)."""
        return self.loaded if self.loaded is not None else self.network()

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


def check_optimizer(optim_cfg: dict) -> None:
    """Every optimizer setting torch would refuse (a negative learning rate, momentum or weight decay; betas outside
    [0, 1)), refused now, before the first file is written, rather than at the first level's configure_optimizers: the
    configured optimizer is built once on a one-element parameter."""
    from lottery.config import ConfigError
    from lottery.training.fit import optimizer_factory

    try:
        optimizer_factory(optim_cfg)([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as err:
        settings = ", ".join(f"optim.{k}={v}" for k, v in optim_cfg.items() if k not in ("_target_", "_partial_"))
        raise ConfigError(
            f"torch.optim refuses the optimizer settings ({settings}): {err}; fix the value it names (e.g. "
            "optim.lr=1e-3); nothing was written"
        ) from None


def prepare(cfg: LotteryConfig, model_cfg: dict, optim_cfg: dict) -> Setup:
    """Validate, load data, build the pruning plan and claim the output folder; no training yet."""
    setup, network, inputs = _built(cfg, model_cfg, optim_cfg)
    check_claim(setup.paths, inputs)  # reads only: a refusal leaves the output folder exactly as it was
    try:
        check_series(setup.paths, setup.series_steps, network)  # reads only, as check_claim
    except ArtifactError as err:
        raise ConfigError(str(err)) from None
    # Scoring as loaded writes scores and curves only (kilobytes); anything else writes weights per level.
    num_parameters = sum(p.numel() for p in network.parameters())
    as_loaded = setup.loaded is not None
    check_output_folder(setup.paths.seed_dir, 1 << 20 if as_loaded else estimate_bytes(num_parameters, setup.levels))
    claim(setup.paths, inputs)
    return setup


def build(cfg: LotteryConfig, model_cfg: dict, optim_cfg: dict) -> Setup:
    """The run's Setup from its config, reading only: validated, data loaded and carved, the pruning plan built.
    prepare() then claims the output folder; the followers of a cluster launch stop here (their fits are rank 0's,
    and rank 0 alone writes)."""
    return _built(cfg, model_cfg, optim_cfg)[0]


def _built(cfg: LotteryConfig, model_cfg: dict, optim_cfg: dict) -> tuple[Setup, torch.nn.Module, dict[str, Any]]:
    """(the Setup, the network built on the way, the hashed settings)."""
    validate(cfg)
    if not scores_as_loaded(cfg):  # a study of a model as loaded builds no optimizer
        check_optimizer(optim_cfg)
    splits = datasets.load(
        cfg.data.name,
        root=cfg.data.root,
        download=cfg.data.download,
        num_samples=cfg.data.num_samples,
        settings=cfg.data,
    )
    check_augment(cfg, splits.input_shape)
    as_loaded = scores_as_loaded(cfg)
    # a study of the model as loaded draws no training batches: train.batch_size cannot exceed what it does not use
    batch = 1 if as_loaded else cfg.train.batch_size
    carved = TensorDataModule(splits, cfg.data.val_size, cfg.data.split_seed, batch, cfg.seed, augment=cfg.data.augment)
    spe = carved.steps_per_epoch  # durations in epochs need the carved training split
    total, rewind = (0, 0) if as_loaded else (steps(cfg.train.duration, spe), steps(cfg.rewind.step, spe))
    series: tuple[int, ...] = ()
    if not as_loaded:
        check_steps(cfg, total, rewind)
        try:
            series = series_steps(cfg.train.save_at, total)
        except SeriesError as err:
            raise ConfigError(str(err)) from None
    datamodule = carved.replace(total_steps=total)
    h, inputs = experiment_hash(cfg)
    network = build_network(model_cfg, datamodule)
    weights = M.prunable_weights(network)
    schedule = sparsity_schedule(cfg)
    levels = schedule.resolve_levels(cfg.levels)
    base_inputs = {k: v for k, v in inputs.items() if not k.startswith("pruning.")} | {"strategy": cfg.pruning.strategy}
    plan: Plan
    if cfg.pruning.strategy == "structured":  # whole heads and MLP units (lottery/structured/plan.py)
        scorer = UnitScorer(partial(build_network, model_cfg, datamodule), datamodule, cfg.structured.score_examples)
        shapes = {n: tuple(w.shape) for n, w in weights.items()}
        plan = StructuredPlan.build(cfg.structured, network.layout(), schedule, shapes, scorer)
        # Level 0 (dense training) does not depend on how units are later ranked: keep structured.* out of its key,
        # so runs that differ only in score or units share one trained level 0 (lottery/reuse.py). Level keys from 1
        # on name the score and unit kinds through keep_counts.
        base_inputs = {k: v for k, v in base_inputs.items() if not k.startswith("structured.")}
        if cfg.structured.procedure == "no_retrain":
            levels = 0
    else:
        p = cfg.pruning
        plan = PruningPlan.build(list(weights), p.scope, p.fraction, p.overrides, p.ignore, schedule=schedule)
    check_levels(cfg, levels)
    setup = Setup(
        cfg=cfg,
        model_cfg=model_cfg,
        optim_cfg=optim_cfg,
        datamodule=datamodule,
        total_steps=total,
        rewind_step=rewind,
        eval_every=steps(cfg.train.eval_every, spe),
        checkpoint_every=None if cfg.train.checkpoint_every is None else steps(cfg.train.checkpoint_every, spe),
        plan=plan,
        levels=levels,
        paths=RunPaths(root=cfg.root, name=cfg.name, hash=h, seed=cfg.seed),
        base_inputs=base_inputs,
        shapes={n: tuple(weights[n].shape) for n in plan.layers},
        loaded=network if as_loaded else None,
        series_steps=series,
    )
    check_finetune(cfg, setup.lr_lambda()(total))
    return setup, network, inputs


def check_claim(paths: RunPaths, inputs: dict[str, Any]) -> None:
    """Refuse to mix in results of a different configuration (the hash folder's record names other settings)."""
    if paths.hash_file.exists():
        existing = artifacts.read_json(paths.hash_file, "hash record")
        if existing != inputs:
            raise artifacts.ArtifactError(
                f"{paths.hash_file} records settings {existing}, but this run's are {inputs}: the folder holds "
                "results of another configuration. Nothing was changed; move that folder aside or use another root."
            )


def claim(paths: RunPaths, inputs: dict[str, Any]) -> None:
    """Record what the hash folder holds (after check_claim)."""
    check_claim(paths, inputs)
    if not paths.hash_file.exists():
        artifacts.write_json(inputs, paths.hash_file)
