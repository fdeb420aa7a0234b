"""What a run says while it trains: one line per finished level, a line when a level resumes from its checkpoint,
and (train.print_every_eval=true) one line per evaluation.

The level line is printed whether or not the progress bar is on: without a bar (sweeps, log files) it is the only
sign of progress; with one, the bar is transient and this line is what it leaves behind. Lines go through
lottery/console/, so a log file gets them whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lottery.console import say


def _label(prefix: str) -> str:
    return f"{prefix} " if prefix else ""


def level_line(metrics: dict[str, Any], prefix: str = "") -> str:
    """`level 3  density 51.20%  3000 steps  best val 61.20% at step 1000  test 59.20%  12.3 s`"""
    return (
        f"{_label(prefix)}level {metrics['level']}  density {metrics['density']:.2%}  "
        f"{metrics.get('steps', '?')} steps  "
        f"best val {metrics['best_val_acc']:.2%} at step {metrics['best_val_step']}  "
        f"test {metrics['test_acc']:.2%}  {metrics['train_seconds']:.1f} s"
    )


def say_level(metrics: dict[str, Any], prefix: str = "") -> None:
    say(level_line(metrics, prefix))


def say_known_level(metrics: dict[str, Any], prefix: str = "") -> None:
    """A level this run did not train: finished by an earlier run, or copied from a schedule sharing it."""
    how = f"reused from {metrics['reused_from']}" if "reused_from" in metrics else "finished earlier, skipped"
    say(
        f"{_label(prefix)}level {metrics['level']}  density {metrics['density']:.2%}  "
        f"test {metrics['test_acc']:.2%}  ({how})"
    )


def say_resume(level: int, step: int, total: int, checkpoint: Path, prefix: str = "") -> None:
    say(f"{_label(prefix)}level {level}: resuming at step {step} of {total} from {checkpoint}")


def say_eval(level: int, step: int, acc: float, loss: float, *, total: int, prefix: str = "") -> None:
    say(f"{_label(prefix)}level {level}  step {step}/{total}  val acc {acc:.2%}  val loss {loss:.4f}")


def label_of(label: str | None, level_dir: Path, seed_dir: Path) -> str:
    """What names a fit in its bar and lines: its own label, else its branch ("" for the trunk)."""
    if label is not None:
        return label
    return "" if Path(level_dir).parent == Path(seed_dir) else Path(level_dir).parent.name.removeprefix("branch_")


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at, read without loading its tensors (mmap: only the
    pickled structure is read); None when the file cannot be read that way (it is then checked, and reported,
    by the full read in lottery/training/fit.py)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["global_step"])
    except Exception:  # corrupt, truncated or not a checkpoint: the caller's full check names the problem
        return None
