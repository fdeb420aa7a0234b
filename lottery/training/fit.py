"""One level's training: one fresh Lightning Trainer.fit from a given start.

The IMP trunk (lottery/imp.py) and every branch (lottery/branches/) train through `fit_level`, so all train the same
way: the level's mask enforced after every step, evaluation at fixed steps, a resume checkpoint every
`train.checkpoint_every`; `results.finish_level` then writes what the fit leaves, metrics.json last.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import torch
from hydra.utils import instantiate

from lottery.config import without_name
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.layout import LevelPaths
from lottery.core.lr_schedule import constant_multiplier
from lottery.reports.console import stdout_is_terminal
from lottery.training import progress
from lottery.training.callbacks import LevelProgressBar, ResumeCheckpoint, RewindCapture
from lottery.training.distributed import strategy
from lottery.training.fast import place_data, prepare_network
from lottery.training.module import LevelModule

if TYPE_CHECKING:
    from lottery.setup import Setup
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
    """What one fit needs beyond the run's Setup: the level, its folder, its mask and where it starts.

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


def check_checkpoint(path: Path) -> int:
    """Read a checkpoint safely before Lightning does, so a truncated or code-carrying file is a clear error naming
    the file rather than a deep unpickling traceback; returns the step it was saved at. The tensors are mapped, not
    read (mmap), so this look costs little beside Lightning's own full read that follows."""
    state = artifacts.load_torch(path, "checkpoint", mmap=True)
    missing = [k for k in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step") if k not in state]
    if missing:
        raise artifacts.ArtifactError(
            f"checkpoint {path} lacks {missing}: it is not a full training state written by this program. Move it "
            "aside and re-run (a level's last.ckpt: the level restarts; rewind.ckpt: delete level_0 to retrain it)."
        )
    return int(state["global_step"])


def fit_level(setup: Setup, fit: LevelFit, tracker: Tracker) -> LevelModule:
    """One fresh Trainer.fit of one level (trunk or branch), resuming its own last checkpoint if there is one."""
    cfg, lp = setup.cfg, fit.paths
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    network = setup.network(seed=cfg.seed)
    M.check_compatible(fit.mask, M.prunable_weights(network), source=str(lp.mask))
    network = prepare_network(network, cfg.trainer)
    start = fit.start
    ckpt_path, start_weights = start.checkpoint, None
    if start.weights is not None:
        if ckpt_path is None:
            network.load_state_dict(M.masked_state_dict(start.weights, fit.mask))
        else:
            start_weights = start.weights  # swapped in when the checkpoint loads (LevelModule.on_load_checkpoint)
    resuming = lp.last_checkpoint.exists()
    if resuming:
        ckpt_path, start_weights = lp.last_checkpoint, None
    if ckpt_path is not None:
        step = check_checkpoint(Path(ckpt_path))
        if resuming:
            progress.say_resume(fit.level, step, setup.total_steps, lp.last_checkpoint, fit_label(setup, fit))
    lp.last_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(setup, fit, tracker)
    # The device is known once the Trainer exists; the data moves there before the module takes the validation split.
    # Not under trainer=ddp: its spawned workers receive the module (and its data) pickled from this CPU process.
    single = trainer.num_devices == 1 and cfg.trainer.strategy != "ddp"
    device = trainer.strategy.root_device if single else torch.device("cpu")
    datamodule = setup.datamodule if fit.data_seed is None else setup.datamodule.replace(seed=fit.data_seed)
    place_data(datamodule, device, cfg.trainer)
    lr_lambda = setup.lr_lambda() if start.constant_lr is None else constant_multiplier(start.constant_lr)
    module = LevelModule(
        network,
        optimizer=instantiate(without_name(setup.optim_cfg), _convert_="all"),
        lr_lambda=lr_lambda,
        mask=fit.mask,
        val_data=(datamodule.x_val, datamodule.y_val),
        num_classes=datamodule.num_classes,
        total_steps=setup.total_steps,
        eval_every=setup.eval_every,
        log_every=cfg.train.log_every,
        start_weights=start_weights,
        resume_progress=resuming,
        task=getattr(datamodule, "task", None),
        test_data=(datamodule.x_test, datamodule.y_test),
        fresh_optimizer=start.fresh_optimizer,
        on_evaluate=_eval_printer(setup, fit) if cfg.train.print_every_eval else None,
    )
    module.fit_device = device  # Lightning moves the module to the CPU after fit; finish_level moves it back
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    module.restore_progress(trainer.callback_metrics)  # from the workers, when trainer.strategy=ddp spawned them
    return module


def fit_label(setup: Setup, fit: LevelFit) -> str:
    """The name of a fit in its progress bar and its printed lines ("" for the trunk, else the branch)."""
    return progress.label_of(fit.label, fit.paths.dir, setup.paths.seed_dir)


def _eval_printer(setup: Setup, fit: LevelFit):
    """train.print_every_eval: one line per evaluation (a partial of a module-level function, so DDP can pickle it)."""
    return partial(progress.say_eval, fit.level, total=setup.total_steps, prefix=fit_label(setup, fit))


def make_trainer(setup: Setup, fit: LevelFit, tracker: Tracker) -> L.Trainer:
    """The level's Trainer: max_steps is the run's length (a rewound or resumed fit continues from its step), no
    Lightning validation loop or checkpointing of its own (LevelModule evaluates, ResumeCheckpoint saves)."""
    cfg, lp = setup.cfg, fit.paths
    every, seconds = setup.checkpoint_every, cfg.train.checkpoint_seconds
    resume = ResumeCheckpoint(lp.last_checkpoint, setup.total_steps, every, seconds)
    callbacks = [*fit.callbacks, resume]
    if fit.capture_rewind:
        callbacks.append(RewindCapture(setup.paths.rewind, setup.rewind_step))
    # trainer.progress_bar draws the bar on a terminal only; a log file gets the per-level lines (progress.py)
    bar = cfg.trainer.progress_bar and stdout_is_terminal()
    if bar:
        label = fit_label(setup, fit)
        prefix = f"{label} " if label else ""
        callbacks.append(LevelProgressBar(fit.level, setup.levels, M.density(fit.mask), prefix=prefix))
    return L.Trainer(
        max_steps=setup.total_steps,
        max_epochs=-1,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=strategy(cfg.trainer),
        precision=cfg.train.precision,
        deterministic=cfg.trainer.deterministic,
        logger=tracker.level_loggers(fit.level) or False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.train.log_every,
        default_root_dir=str(setup.paths.seed_dir),
    )
