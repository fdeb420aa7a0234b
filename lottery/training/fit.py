"""One level's training: one fresh Lightning Trainer.fit of a stack of N >= 1 replicas from given starts.

The IMP trunk (lottery/imp.py) and every branch (lottery/branches/) train through `fit_levels`, one seed or many, so
all train the same way: a stack (lottery/training/stack.py) whose replicas each keep their own mask (enforced after
every step), evaluations at fixed steps and resume checkpoints every `train.checkpoint_every`, written per replica;
`results.finish_level` then writes what the fit leaves, metrics.json last. A solo run is a stack of one, so a seed's
bits do not depend on how many seeds trained beside it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger

from lottery.config import without_name
from lottery.console import say, stdout_is_terminal
from lottery.core import masks as M
from lottery.core.layout import LevelPaths
from lottery.core.lr_schedule import constant_multiplier
from lottery.data.batches import StepBatches
from lottery.training import distributed, progress
from lottery.training.callbacks import LevelProgressBar
from lottery.training.checkpoints import LevelCheckpoints, check_checkpoint, load_stacked
from lottery.training.fast import place_data, prepare_stack
from lottery.training.module import LevelModule, LevelResult
from lottery.training.stack import SINGLE, Stack, kind_of

if TYPE_CHECKING:
    from lottery.training.spec import RunSpec
    from lottery.training.tracking import Tracker


@dataclass(frozen=True)
class Start:
    """Where a level's training starts (lottery/training/starts.py builds them). The mask is applied on top of all.

    checkpoint       a saved training state (the rewind point): its step, optimizer, LR schedule and data order
    step             that checkpoint's step (0 without one): the step the level's training starts from
    weights          weights that replace the checkpoint's (or the fresh network's)
    fresh_optimizer  drop the checkpoint's optimizer state (momentum, Adam moments), keep its step, LR and data order
    constant_lr      a fixed LR multiplier instead of the schedule (fine-tuning)
    """

    checkpoint: Path | None = None
    step: int = 0
    weights: dict[str, torch.Tensor] | None = None
    fresh_optimizer: bool = False
    constant_lr: float | None = None


@dataclass(frozen=True)
class LevelFit:
    """What one fit needs beyond the run's setup (a RunSpec): the level, its folder, its mask and where it starts.

    `capture_rewind`: save the rewind point on the way (the trunk's level 0); `data_seed`: another data order than the
    run seed's (the instability analysis's second copy); `callbacks` run before the level's own (so their state is in
    a checkpoint saved at the same step); `label` names the progress bar (default: the branch folder)."""

    paths: LevelPaths
    level: int
    mask: M.Mask
    start: Start = Start()
    capture_rewind: bool = False
    data_seed: int | None = None
    callbacks: tuple[L.Callback, ...] = ()
    label: str | None = None


SCRATCH = ".stack"  # scratch space for a fit's stacked checkpoints, beside its first replica's levels


def fit_level(setup: RunSpec, fit: LevelFit, tracker: Tracker) -> LevelResult:
    """One seed's level: a stack of one."""
    return fit_levels([setup], [fit], [tracker])[0]


def fit_levels(setups: Sequence[RunSpec], fits: Sequence[LevelFit], trackers: Sequence[Tracker]) -> list[LevelResult]:
    """Train one level of every replica (setups[i] is replica i's seed and config, fits[i] its level), returning
    results in the same order. Replicas that start from one step train as one stack; a replica resuming its own
    checkpoint joins those resuming at the same step. What cannot stack (a model the stack cannot run, data-parallel
    training, a fit with callbacks of its own) trains one replica at a time, with a notice."""
    groups: dict[tuple, list[int]] = {}
    for i, fit in enumerate(fits):
        resume = fit.paths.last_checkpoint
        key = ("resume", check_checkpoint(resume)) if resume.exists() else ("start", fit.start.step)
        groups.setdefault(key, []).append(i)
    out: list[LevelResult | None] = [None] * len(setups)
    for (kind, step), members in groups.items():
        resuming = kind == "resume"
        if resuming:
            seeds = ", ".join(str(setups[i].cfg.seed) for i in members)
            lp = fits[members[0]].paths
            label = fit_label(setups[members[0]], fits[members[0]]) if len(members) == 1 else f"seed {seeds}"
            progress.say_resume(fits[members[0]].level, step, setups[0].total_steps, lp.last_checkpoint, label)
        reason = _unstackable(setups[members[0]], fits[members[0]]) if len(members) > 1 else None
        batches = [[i] for i in members] if reason else [members]
        if reason:
            say(f"level {fits[members[0]].level}: {len(members)} replicas train one at a time: {reason}")
        for chosen in batches:
            results = fit_stack([setups[i] for i in chosen], [fits[i] for i in chosen], [trackers[i] for i in chosen])
            for i, result in zip(chosen, results, strict=True):
                out[i] = result
    return [r for r in out if r is not None]


def _unstackable(setup: RunSpec, fit: LevelFit) -> str | None:
    """Why a group of replicas cannot train as one stack (None: it can)."""
    t = setup.cfg.trainer
    if t.strategy == "ddp" or (isinstance(t.devices, int) and t.devices > 1):
        return f"trainer.strategy={t.strategy} trainer.devices={t.devices} trains one replica on several devices"
    if fit.callbacks:
        return "the fit carries callbacks of its own"
    kind = kind_of(setup.network(seed=setup.cfg.seed))
    if kind == SINGLE:
        return f"model={setup.model_cfg.get('name', '?')} cannot be stacked (dropout, or a layer the stack lacks)"
    return None


def stack_of(setups: Sequence[RunSpec], fits: Sequence[LevelFit]) -> Stack:
    """The replicas' networks, each from its seed (theta_0) with its start weights when no checkpoint brings them,
    as one stack on the trainer's settings."""
    networks = []
    for setup, fit in zip(setups, fits, strict=True):
        L.seed_everything(setup.cfg.seed, workers=False, verbose=False)
        network = setup.network(seed=setup.cfg.seed)
        M.check_compatible(fit.mask, M.prunable_weights(network), source=str(fit.paths.mask))
        if fit.start.weights is not None and fit.start.checkpoint is None:
            network.load_state_dict(M.masked_state_dict(fit.start.weights, fit.mask))
        networks.append(network)
    stack = Stack(networks)
    prepare_stack(stack, setups[0].cfg.trainer)
    return stack


def fit_stack(setups: Sequence[RunSpec], fits: Sequence[LevelFit], trackers: Sequence[Tracker]) -> list[LevelResult]:
    spec = fits[0]
    stack = stack_of(setups, fits)
    resuming = spec.paths.last_checkpoint.exists()
    for fit in fits:
        fit.paths.last_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    # The stacked checkpoints live beside the first replica's levels (its seed folder for the trunk, its branch
    # folder for a control), under the lock the job holds on it (lottery/job.py), so no other job uses it; a killed
    # fit's leftovers are removed here before the next one starts.
    scratch_dir = spec.paths.dir.parent / SCRATCH
    shutil.rmtree(scratch_dir, ignore_errors=True)
    scratch_dir.mkdir(parents=True)
    try:
        ckpt_path = None
        sources = [f.paths.last_checkpoint for f in fits] if resuming else [f.start.checkpoint for f in fits]
        if resuming or spec.start.checkpoint is not None:
            ckpt_path = load_stacked(sources, scratch_dir / "start.ckpt", stack.stacked)
        loggers = [t.level_loggers(f.level) for t, f in zip(trackers, fits, strict=True)]
        trainer, module = level_trainer(setups, fits, stack, loggers, scratch_dir, resuming)
        # Trainer.fit, with the followers of a cluster launch (each rebuilds this fit from its order: follow_fit)
        distributed.fit(trainer, module, ckpt_path, lambda: order_of(setups, fits, ckpt_path, scratch_dir, resuming))
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    module.restore_progress(trainer.callback_metrics)  # from the workers, when trainer.strategy=ddp spawned them
    # The final test accuracy by the stack that trained the level, as its validation and early-stopping points were
    # (module.evaluate), on the training device, where the data already is; Lightning left the module on the CPU.
    module.to(module.fit_device)
    finals = module.evaluate(*module.test_data)
    module.cpu()
    if not stack.stacked:
        return [LevelResult(stack.network, module, 0, finals[0])]
    return [LevelResult(setup.network(), module, i, finals[i]) for i, setup in enumerate(setups)]


def level_trainer(
    setups: Sequence[RunSpec],
    fits: Sequence[LevelFit],
    stack: Stack,
    loggers: Sequence[Sequence[Logger]],
    scratch_dir: Path,
    resuming: bool,
) -> tuple[L.Trainer, LevelModule]:
    """The Trainer and LevelModule of one fit: rank 0's (fit_stack) and a cluster follower's (follow_fit) alike."""
    first, spec = setups[0], fits[0]
    cfg = first.cfg
    start = spec.start
    start_weights = None
    if not resuming and start.weights is not None and start.checkpoint is not None:
        start_weights = [f.start.weights for f in fits]  # swapped in when the checkpoint loads
    trainer = make_trainer(setups, fits, loggers, scratch_dir / "save.ckpt", stack.stacked)
    # The device is known once the Trainer exists; the data moves there before the module takes the splits.
    # Not under trainer=ddp: its spawned workers receive the module (and its data) pickled from this CPU process.
    single = trainer.num_devices == 1 and cfg.trainer.strategy != "ddp"
    device = trainer.strategy.root_device if single else torch.device("cpu")
    datamodules = [_datamodule(s, f) for s, f in zip(setups, fits, strict=True)]
    for dm in datamodules:
        place_data(dm, device, cfg.trainer)
    dm = datamodules[0]
    lr_lambda = first.lr_lambda() if start.constant_lr is None else constant_multiplier(start.constant_lr)
    module = LevelModule(
        stack,
        optimizer=optimizer_factory(first.optim_cfg),
        lr_lambda=lr_lambda,
        masks=[f.mask for f in fits],
        val_data=(dm.x_val, dm.y_val),
        num_classes=dm.num_classes,
        total_steps=first.total_steps,
        eval_every=first.eval_every,
        log_every=cfg.train.log_every,
        start_weights=start_weights,
        resume_progress=resuming,
        task=getattr(dm, "task", None),
        test_data=(dm.x_test, dm.y_test),
        fresh_optimizer=start.fresh_optimizer,
        loggers=loggers,
        on_evaluate=[
            _eval_printer(s, f) if cfg.train.print_every_eval else None for s, f in zip(setups, fits, strict=True)
        ],
        batches=[_batches(d, s) for d, s in zip(datamodules, setups, strict=True)],
        periods=(first.checkpoint_every, *(getattr(c, "every", None) for c in spec.callbacks)),
        marks=(first.rewind_step, *first.series_steps) if spec.capture_rewind else (),
    )
    module.fit_device = device  # Lightning moves the module to the CPU after fit; finish_level moves it back
    module.threads = cfg.trainer.threads
    return trainer, module


# ---- a fit as the followers of a cluster launch receive it: plain values and tensors (torch.load weights_only)
def order_of(
    setups: Sequence[RunSpec], fits: Sequence[LevelFit], ckpt_path: Path | None, scratch_dir: Path, resuming: bool
) -> dict:
    """What a follower needs to rebuild rank 0's fit from its own Setup (same config, so same data, networks and
    paths): the level, its folder, mask and start, the names of its callbacks, and where rank 0 put the start
    checkpoint. No dataset tensors and no Python objects other than plain values."""
    (setup,), (fit,) = setups, fits  # a distributed fit is one replica (fit_levels trains DDP replicas apart)
    start = fit.start
    names = [getattr(c, "remade_by", None) for c in fit.callbacks]
    if None in names:
        raise RuntimeError(f"a callback of this fit has no `remade_by` name for the followers: {fit.callbacks}")
    return {
        "seed_dir": str(setup.paths.seed_dir),
        "dir": str(fit.paths.dir),
        "level": fit.level,
        "mask": dict(fit.mask),
        "start": {
            "checkpoint": None if start.checkpoint is None else str(start.checkpoint),
            "step": start.step,
            "weights": None if start.weights is None else dict(start.weights),
            "fresh_optimizer": start.fresh_optimizer,
            "constant_lr": start.constant_lr,
        },
        "capture_rewind": fit.capture_rewind,
        "data_seed": fit.data_seed,
        "callbacks": names,
        "label": fit.label,
        "ckpt_path": None if ckpt_path is None else str(ckpt_path),
        "scratch": str(scratch_dir),
        "resuming": resuming,
    }


def follow_fit(setup: RunSpec, order: dict, remakers: Mapping[str, Callable[[Any], L.Callback]]):
    """A follower's (Trainer, module, checkpoint path) for rank 0's fit, rebuilt from its order and this rank's own
    Setup; `remakers` make a fit's callbacks by name (they run on every rank: the early-bird search stops every
    rank's loop at once)."""
    if order["seed_dir"] != str(setup.paths.seed_dir):
        raise RuntimeError(
            f"rank 0 trains {order['seed_dir']} but this rank's config gives {setup.paths.seed_dir}: every rank must "
            "run the same command with the same config"
        )
    s = order["start"]
    start = Start(
        checkpoint=None if s["checkpoint"] is None else Path(s["checkpoint"]),
        step=s["step"],
        weights=s["weights"],
        fresh_optimizer=s["fresh_optimizer"],
        constant_lr=s["constant_lr"],
    )
    fit = LevelFit(
        LevelPaths(Path(order["dir"])),
        order["level"],
        order["mask"],
        start,
        capture_rewind=order["capture_rewind"],
        data_seed=order["data_seed"],
        callbacks=tuple(remakers[name](setup) for name in order["callbacks"]),
        label=order["label"],
    )
    stack = stack_of([setup], [fit])
    trainer, module = level_trainer([setup], [fit], stack, [[]], Path(order["scratch"]), order["resuming"])
    return trainer, module, order["ckpt_path"]


def optimizer_factory(optim_cfg: dict):
    """The configured optimizer (torch.optim.Adam or SGD) with torch's multi-tensor ("foreach") implementation: the
    same element-wise update in a few calls over all tensors instead of a Python loop per tensor (on the CPU about
    twice as fast for LeNet-300-100's Adam step, measured here). Never `fused`: fused kernels split their work by a
    tensor's length, so a replica's rounding would depend on the stack's size."""
    return partial(instantiate(without_name(optim_cfg), _convert_="all"), foreach=True)


def _datamodule(setup: RunSpec, fit: LevelFit):
    return setup.datamodule if fit.data_seed is None else setup.datamodule.replace(seed=fit.data_seed)


def _batches(dm, setup: RunSpec) -> StepBatches:
    return StepBatches(
        dm.x_train, dm.y_train, dm.batch_size, dm.seed, setup.total_steps, augment=dm.augment, pad_value=dm.pad_value
    )


def fit_label(setup: RunSpec, fit: LevelFit) -> str:
    """The name of a fit in its progress bar and its printed lines ("" for the trunk, else the branch)."""
    return progress.label_of(fit.label, fit.paths.dir, setup.paths.seed_dir)


def _eval_printer(setup: RunSpec, fit: LevelFit):
    """train.print_every_eval: one line per evaluation (a partial of a module-level function, so DDP can pickle it)."""
    return partial(progress.say_eval, fit.level, total=setup.total_steps, prefix=fit_label(setup, fit))


def make_trainer(
    setups: Sequence[RunSpec],
    fits: Sequence[LevelFit],
    loggers: Sequence[Sequence[Logger]],
    scratch: Path,
    stacked: bool,
) -> L.Trainer:
    """The level's Trainer: max_steps is the run's length (a rewound or resumed fit continues from its step), no
    Lightning validation loop or checkpointing of its own (LevelModule evaluates, LevelCheckpoints saves). Every
    replica's loggers are the Trainer's, so Lightning saves and closes them; the module logs to each replica's own."""
    first, spec = setups[0], fits[0]
    cfg = first.cfg
    checkpoints = LevelCheckpoints(
        [f.paths.last_checkpoint for f in fits],
        scratch,
        first.total_steps,
        stacked,
        every=first.checkpoint_every,
        seconds=cfg.train.checkpoint_seconds,
        rewinds=[s.paths.rewind for s in setups] if spec.capture_rewind else None,
        rewind_step=first.rewind_step,
        series={n: [s.paths.series_point(n) for s in setups] for n in first.series_steps}
        if spec.capture_rewind
        else {},
    )
    callbacks: list[L.Callback] = [*spec.callbacks, checkpoints]
    # trainer.progress_bar draws the bar on a terminal only; a log file gets the per-level lines (progress.py)
    bar = cfg.trainer.progress_bar and stdout_is_terminal()
    if bar:
        if len(setups) == 1:
            label = fit_label(first, spec)
            prefix = f"{label} " if label else ""
        else:
            prefix = f"{len(setups)} seeds ({','.join(str(s.cfg.seed) for s in setups)}) "
        density = sum(M.density(f.mask) for f in fits) / len(fits)
        callbacks.append(LevelProgressBar(spec.level, first.levels, density, prefix=prefix))
    return L.Trainer(
        max_steps=first.total_steps,
        max_epochs=-1,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=distributed.strategy(cfg.trainer),
        precision=cfg.train.precision,
        deterministic=cfg.trainer.deterministic,
        logger=[logger for group in loggers for logger in group] or False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.train.log_every,
        default_root_dir=str(first.paths.seed_dir),
    )
