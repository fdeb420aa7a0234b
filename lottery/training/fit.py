"""Training one level: one fresh Lightning Trainer.fit from a given start, and the artifacts it leaves.

Used by the IMP trunk (lottery/imp.py) and by the control branches (lottery/branches/controls.py) alike, so both train the
same way: the level's mask enforced after every step, evaluation at fixed steps, a resume checkpoint every
`train.checkpoint_every`, and metrics.json written last.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from hydra.utils import instantiate

from lottery.training.callbacks import LevelProgressBar, ResumeCheckpoint, RewindCapture
from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.lr_schedule import constant_multiplier
from lottery.training.distributed import strategy
from lottery.training.fast import place_data, prepare_network
from lottery.core.layout import LevelPaths
from lottery.training.module import LevelModule

if TYPE_CHECKING:
    from lottery.imp import Setup
    from lottery.training.tracking import Tracker


def without_name(node: dict[str, Any]) -> dict[str, Any]:
    """A model/optimizer config minus `name`: that is the stable key the hash uses, not a constructor argument."""
    return {k: v for k, v in node.items() if k != "name"}


@dataclass
class Start:
    """Where a level's training starts. `checkpoint`: a saved training state (the rewind point) whose step, optimizer,
    LR schedule and data order are restored; `weights`: weights that replace the checkpoint's (or the fresh network's);
    `constant_lr`: a fixed LR multiplier instead of the schedule (fine-tuning). The mask is applied on top of all."""

    checkpoint: Path | None = None
    weights: dict[str, torch.Tensor] | None = None
    constant_lr: float | None = None


def check_checkpoint(path: Path) -> None:
    """Read a checkpoint safely before Lightning does, so a corrupt, truncated or code-carrying file is a clear error
    naming the file rather than a deep unpickling traceback. (It costs one extra read of the file per level.)"""
    state = artifacts.load_torch(path, "checkpoint")
    missing = [k for k in ("state_dict", "optimizer_states", "lr_schedulers", "loops") if k not in state]
    if missing:
        raise artifacts.ArtifactError(
            f"checkpoint {path} lacks {missing}: it is not a full training state written by this program. Move it "
            "aside and re-run (a level's last.ckpt: the level restarts; rewind.ckpt: delete level_0 to retrain it)."
        )


def fit_level(
    setup: Setup,
    lp: LevelPaths,
    level: int,
    mask: M.Mask,
    start: Start,
    tracker: Tracker,
    capture_rewind: bool = False,
    data_seed: int | None = None,
    callbacks: list[L.Callback] | None = None,
    label: str | None = None,
) -> LevelModule:
    """One fresh Trainer.fit of one level (trunk or branch), resuming its own last checkpoint if there is one.

    `data_seed`: another data order than the run seed's (the instability analysis's second copy); `callbacks` run
    before the level's own (so their state is in a checkpoint saved at the same step); `label` names the progress
    bar (default: the branch folder)."""
    cfg = setup.cfg
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    network = setup.network(seed=cfg.seed)
    M.check_compatible(mask, M.prunable_weights(network), source=str(lp.mask))
    network = prepare_network(network, cfg.trainer)
    lr_lambda = setup.lr_lambda()
    if start.constant_lr is not None:
        lr_lambda = constant_multiplier(start.constant_lr)
    ckpt_path, start_weights = start.checkpoint, None
    if start.weights is not None:
        if ckpt_path is None:
            network.load_state_dict(M.masked_state_dict(start.weights, mask))
        else:
            start_weights = start.weights  # swapped in when the checkpoint loads (LevelModule.on_load_checkpoint)
    resuming = lp.last_checkpoint.exists()
    if resuming:
        ckpt_path, start_weights = lp.last_checkpoint, None
    if ckpt_path is not None:
        check_checkpoint(Path(ckpt_path))
    callbacks = [*(callbacks or []), ResumeCheckpoint(lp.last_checkpoint, setup.checkpoint_every, setup.total_steps)]
    if capture_rewind:
        callbacks.append(RewindCapture(setup.paths.rewind, setup.rewind_step))
    if cfg.trainer.progress_bar:
        if label is None:
            label = "" if lp.dir.parent == setup.paths.seed_dir else lp.dir.parent.name.removeprefix("branch_")
        callbacks.append(LevelProgressBar(level, setup.levels, M.density(mask), prefix=f"{label} " if label else ""))
    lp.last_checkpoint.parent.mkdir(parents=True, exist_ok=True)
    trainer = L.Trainer(
        max_steps=setup.total_steps,
        max_epochs=-1,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=strategy(cfg.trainer),
        precision=cfg.train.precision,
        deterministic=cfg.trainer.deterministic,
        logger=tracker.level_loggers(level) or False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.train.log_every,
        default_root_dir=str(setup.paths.seed_dir),
    )
    # The device is known once the Trainer exists; the data moves there before the module takes the validation split.
    # Not under trainer=ddp: its spawned workers receive the module (and its data) pickled from this CPU process.
    single = trainer.num_devices == 1 and cfg.trainer.strategy != "ddp"
    device = trainer.strategy.root_device if single else torch.device("cpu")
    place_data(setup.datamodule, device, cfg.trainer)
    module = LevelModule(
        network,
        optimizer=instantiate(without_name(setup.optim_cfg), _convert_="all"),
        lr_lambda=lr_lambda,
        mask=mask,
        val_data=(setup.datamodule.x_val, setup.datamodule.y_val),
        num_classes=setup.datamodule.num_classes,
        total_steps=setup.total_steps,
        eval_every=setup.eval_every,
        log_every=cfg.train.log_every,
        start_weights=start_weights,
        resume_progress=resuming,
        task=getattr(setup.datamodule, "task", None),
    )
    module.fit_device = device  # Lightning moves the module to the CPU after fit; finish_level moves it back
    run_seed = setup.datamodule.seed
    setup.datamodule.seed = run_seed if data_seed is None else data_seed  # read by train_dataloader() inside fit
    try:
        trainer.fit(module, datamodule=setup.datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        setup.datamodule.seed = run_seed
    module.restore_progress(trainer.callback_metrics)  # from the workers, when trainer.strategy=ddp spawned them
    return module


def plain_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's state dict as plain (contiguous) CPU copies whatever the training layout (channels_last, GPU), so
    weights files read the same under any speed switch."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in network.state_dict().items()}


def finish_level(
    setup: Setup, level: int, lp: LevelPaths, module: LevelModule, mask: M.Mask, tracker, key: bool = True
) -> dict:
    """Write a trained level's artifacts (metrics.json last). `key`: record the level key that lets other schedules
    reuse this level (trunk levels only)."""
    weights = plain_state(module.network)
    for name, m in mask.items():  # internal invariant: the mask held through every step
        assert not bool(weights[name][~m].any()), f"pruned weights of {name} are not zero"
    # Score the test set on the training device (the GPU, where the data may already be), then release it.
    module.to(module.fit_device)
    test_acc, test_loss = module.evaluate(setup.datamodule.x_test, setup.datamodule.y_test)
    module.cpu()
    sparsity = setup.plan.report(mask, level)
    metrics = {
        "level": level,
        "density": sparsity["density"],
        "target_density": sparsity["target_density"],
        "remaining_weights": sparsity["remaining"],
        "test_acc": test_acc,
        "test_loss": test_loss,
        "best_val_acc": module.best_val_acc,
        "best_val_step": module.best_val_step,
        "final_val_acc": module.last_val_acc,
        "steps": setup.total_steps,
        "train_seconds": round(module.train_seconds, 3),
    }
    if module.processes > 1:
        metrics["processes"] = module.processes  # trained by DDP; the ranks' weights were checked identical
    if key:
        metrics["level_key"] = setup.level_key(level)
    artifacts.save_torch(weights, lp.weights)
    artifacts.write_json(sparsity, lp.sparsity)
    artifacts.write_json(metrics, lp.metrics)  # last: marks the level finished
    lp.last_checkpoint.unlink(missing_ok=True)
    if lp.last_checkpoint.parent.is_dir() and not any(lp.last_checkpoint.parent.iterdir()):
        lp.last_checkpoint.parent.rmdir()
    tracker.log_level(metrics)
    return metrics


LEVEL_COLUMNS = ("level", "density", "target_density", "test_acc", "best_val_acc", "best_val_step", "train_seconds")


def write_levels_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LEVEL_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    artifacts.write_text(buf.getvalue(), path)
