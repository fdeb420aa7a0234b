"""One level of a cohort: the pending replicas of one level trained by one Trainer.fit per starting point.

Replicas of a cohort level normally start together (level 0 from theta_0 at step 0, level L from each seed's rewind
point at step k). After a kill some replicas may resume from their own last.ckpt at different steps: each starting
point is then its own sub-cohort. That costs a little speed, never exactness, because a replica's result does not
depend on the cohort it trains in (lottery/training/cohort.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
from hydra.utils import instantiate

from lottery.config import without_name
from lottery.core import masks as M
from lottery.core.lr_schedule import constant_multiplier
from lottery.data.batches import StepBatches
from lottery.reports.console import say, stdout_is_terminal
from lottery.training.callbacks import LevelProgressBar
from lottery.training.cohort import CohortError, CohortModule, ReplicaResult, check_vectorizable
from lottery.training.cohort_state import CohortBatches, CohortCheckpoints, load_stacked
from lottery.training.fit import LevelFit, check_checkpoint

SCRATCH = ".cohort"  # scratch space for a cohort's stacked checkpoints, beside its first replica's levels

if TYPE_CHECKING:
    from lottery.setup import Setup
    from lottery.training.tracking import Tracker


def check_cohort_trainer(setup: Setup) -> None:
    t = setup.cfg.trainer
    if t.strategy == "ddp" or (isinstance(t.devices, int) and t.devices > 1):
        raise CohortError(
            f"trainer.strategy={t.strategy} trainer.devices={t.devices}: a cohort trains on one device (its replicas "
            "are the parallelism); use trainer.devices=1, or drop launcher=cohort to train solo fits with DDP"
        )


def fit_cohort(setups: Sequence[Setup], fits: Sequence[LevelFit], trackers: Sequence[Tracker]) -> list[ReplicaResult]:
    """Train one level of every replica (setups[i] is replica i's seed), returning results in the same order."""
    groups: dict[tuple, list[int]] = {}
    for i, fit in enumerate(fits):
        resume = fit.paths.last_checkpoint
        if resume.exists():
            groups.setdefault(("resume", check_checkpoint(resume)), []).append(i)
        else:
            groups.setdefault(("start", fit.start.step), []).append(i)
    out: list[ReplicaResult | None] = [None] * len(setups)
    for (kind, step), members in groups.items():
        if kind == "resume":
            seeds = ", ".join(str(setups[i].cfg.seed) for i in members)
            say(f"level {fits[members[0]].level}: seed {seeds} resuming at step {step} of {setups[0].total_steps}")
        results = _fit_group(
            [setups[i] for i in members], [fits[i] for i in members], [trackers[i] for i in members], kind == "resume"
        )
        for i, result in zip(members, results, strict=True):
            out[i] = result
    return [r for r in out if r is not None]


def _fit_group(
    setups: Sequence[Setup], fits: Sequence[LevelFit], trackers: Sequence[Tracker], resuming: bool
) -> list[ReplicaResult]:
    first, spec = setups[0], fits[0]
    cfg = first.cfg
    check_cohort_trainer(first)
    networks = []
    for setup, fit in zip(setups, fits, strict=True):
        L.seed_everything(setup.cfg.seed, workers=False, verbose=False)
        network = setup.network(seed=setup.cfg.seed)
        check_vectorizable(network, setup.model_cfg.get("name", "?"))
        M.check_compatible(fit.mask, M.prunable_weights(network), source=str(fit.paths.mask))
        start = fit.start
        if start.weights is not None and start.checkpoint is None:
            network.load_state_dict(M.masked_state_dict(start.weights, fit.mask))
        networks.append(network)
    start = spec.start
    start_weights = None
    if not resuming and start.weights is not None and start.checkpoint is not None:
        start_weights = [f.start.weights for f in fits]
    for fit in fits:
        fit.paths.last_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    # The stacked checkpoints live beside the first replica's levels (its seed folder for the trunk, its branch
    # folder for a control), under the lock this cohort holds on it (lottery/job.py), so no other job uses it; a
    # killed cohort's leftovers are removed here before the next one starts.
    scratch_dir = spec.paths.dir.parent / SCRATCH
    shutil.rmtree(scratch_dir, ignore_errors=True)
    scratch_dir.mkdir(parents=True)
    try:
        ckpt_path = None
        if resuming:
            ckpt_path = load_stacked([f.paths.last_checkpoint for f in fits], scratch_dir / "start.ckpt")
        elif start.checkpoint is not None:
            ckpt_path = load_stacked([f.start.checkpoint for f in fits], scratch_dir / "start.ckpt")
        trainer = _trainer(setups, fits, scratch_dir / "save.ckpt")
        device = trainer.strategy.root_device
        dm = first.datamodule
        if cfg.trainer.data_on_device and device.type != "cpu":
            for setup in setups:
                setup.datamodule.to_device(device)
        lr_lambda = first.lr_lambda() if start.constant_lr is None else constant_multiplier(start.constant_lr)
        module = CohortModule(
            networks,
            optimizer=instantiate(without_name(first.optim_cfg), _convert_="all"),
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
            loggers=[t.level_loggers(f.level) for t, f in zip(trackers, fits, strict=True)],
        )
        module.fit_device = device
        batches = CohortBatches(
            [_batches(s, f) for s, f in zip(setups, fits, strict=True)], start_step=lambda: trainer.global_step
        )
        trainer.fit(module, train_dataloaders=batches, ckpt_path=ckpt_path, weights_only=True)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    task = getattr(dm, "task", None)
    return [ReplicaResult(setup.network(), module, i, task, dm.num_classes) for i, setup in enumerate(setups)]


def _batches(setup: Setup, fit: LevelFit) -> StepBatches:
    dm = setup.datamodule if fit.data_seed is None else setup.datamodule.replace(seed=fit.data_seed)
    return StepBatches(
        dm.x_train, dm.y_train, dm.batch_size, dm.seed, setup.total_steps, augment=dm.augment, pad_value=dm.pad_value
    )


def _trainer(setups: Sequence[Setup], fits: Sequence[LevelFit], scratch: Path) -> L.Trainer:
    first, spec = setups[0], fits[0]
    cfg = first.cfg
    rewinds = [s.paths.rewind for s in setups] if spec.capture_rewind else None
    checkpoints = CohortCheckpoints(
        [f.paths.last_checkpoint for f in fits],
        scratch,
        first.total_steps,
        first.checkpoint_every,
        cfg.train.checkpoint_seconds,
        rewinds=rewinds,
        rewind_step=first.rewind_step,
    )
    callbacks: list[L.Callback] = [checkpoints]
    bar = cfg.trainer.progress_bar and stdout_is_terminal()
    if bar:
        seeds = ",".join(str(s.cfg.seed) for s in setups)
        label = f"cohort of {len(setups)} (seeds {seeds}) "
        density = sum(M.density(f.mask) for f in fits) / len(fits)
        callbacks.append(LevelProgressBar(spec.level, first.levels, density, prefix=label))
    return L.Trainer(
        max_steps=first.total_steps,
        max_epochs=-1,
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.train.precision,
        deterministic=cfg.trainer.deterministic,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(first.paths.experiment),
    )
