"""What a trained level leaves on disk: weights.pt, sparsity.json and metrics.json (written last: its presence marks
the level finished), and the levels.csv of a trunk or branch folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.training import progress
from lottery.training.module import LevelResult

if TYPE_CHECKING:
    from lottery.training.fit import LevelFit
    from lottery.training.spec import RunSpec
    from lottery.training.tracking import Tracker

LEVEL_COLUMNS = (
    "level",
    "density",
    "target_density",
    "test_acc",
    "best_val_acc",
    "best_val_step",
    "early_stop_step",
    "early_stop_test_acc",
    "start_step",
    "steps_trained",
    "train_seconds",
)


def plain_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's state dict as plain (contiguous) CPU copies whatever the training layout (channels_last, GPU), so
    weights files read the same under any speed switch."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in network.state_dict().items()}


def finish_level(setup: RunSpec, fit: LevelFit, module: LevelResult, tracker: Tracker, key: bool = True) -> dict:
    """Write a trained level's artifacts (metrics.json last). `key`: record the level key that lets other schedules
    reuse this level (trunk levels only)."""
    lp, level, mask = fit.paths, fit.level, fit.mask
    weights = plain_state(module.network)
    for name, m in mask.items():  # internal invariant: the mask held through every step
        assert not bool(weights[name][~m].any()), f"pruned weights of {name} are not zero"
    sparsity = setup.plan.report(mask, level)
    metrics = {
        "level": level,
        "density": sparsity["density"],
        "target_density": sparsity["target_density"],
        "remaining_weights": sparsity["remaining"],
        "test_acc": module.test_acc,  # measured by the stack that trained it (fit.fit_stack)
        "test_loss": module.test_loss,
        "best_val_acc": module.best_val_acc,
        "best_val_step": module.best_val_step,
        "final_val_acc": module.last_val_acc,
        "early_stop_step": module.early_stop_step,  # the evaluation step of minimum validation loss
        "early_stop_test_acc": module.early_stop_test_acc,  # test accuracy there (the LTH paper's metric)
        "steps": setup.total_steps,
        "start_step": fit.start.step,
        "steps_trained": setup.total_steps - fit.start.step,
        "train_seconds": round(module.train_seconds, 3),
    }
    if module.processes > 1:
        metrics["processes"] = module.processes  # trained by DDP; the ranks' weights were checked identical
    if module.stack_size > 1:  # trained as one replica of a stack of seeds (lottery/training/stack.py)
        metrics["cohort"] = {"size": module.stack_size, "device": str(module.fit_device)}
    if key:
        metrics["level_key"] = setup.level_key(level)
    artifacts.save_torch(weights, lp.weights)
    artifacts.write_json(sparsity, lp.sparsity)
    artifacts.write_json(metrics, lp.metrics)  # last: marks the level finished
    remove_checkpoint(lp.last_checkpoint)
    tracker.log_level(metrics)
    progress.say_level(metrics, progress.label_of(fit.label, lp.dir, setup.paths.seed_dir))
    return metrics


def remove_checkpoint(path: Path) -> None:
    """Drop a finished fit's resume checkpoint, and its folder once empty."""
    path.unlink(missing_ok=True)
    if path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


def write_levels_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    artifacts.write_csv(rows, path, LEVEL_COLUMNS)
