"""Learning-rate schedules as plain functions of the optimizer step, with milestones and warm-up in steps.

They are pure functions rather than torch scheduler classes so that (a) milestones can be Durations resolved against
the dataset's steps per epoch, (b) rewinding to step k replays exactly the same LR from k, and (c) fine-tuning can ask
for the LR the schedule reaches at the end of training.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Sequence

KINDS = ("constant", "step", "cosine", "linear")


class ScheduleError(ValueError):
    """An LR schedule setting that cannot be honoured."""


def lr_multiplier(
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """Multiplier of the base LR at optimizer step `step` (0-based: the LR used for the update after `step` updates)."""
    if kind not in KINDS:
        raise ScheduleError(f"schedule.name={kind!r} is not one of {KINDS}")
    if warmup_steps < 0 or warmup_steps > total_steps:
        raise ScheduleError(f"warm-up of {warmup_steps} steps does not fit in a training length of {total_steps} steps")
    bad = [m for m in milestones if not 0 < m <= total_steps]
    if bad:
        raise ScheduleError(f"LR milestones {bad} (in steps) lie outside the training length of {total_steps} steps")
    # A partial of a module-level function rather than a closure: it pickles, which multi-process training (DDP
    # with spawned workers) needs, and LambdaLR stores only its (empty) __dict__ in checkpoints.
    return functools.partial(
        _multiplier,
        kind=kind,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        milestones=tuple(sorted(milestones)),
        gamma=gamma,
    )


def constant_multiplier(value: float) -> Callable[[int], float]:
    """A fixed multiplier (fine-tuning at the schedule's final LR), picklable like lr_multiplier's."""
    return functools.partial(_constant, value=value)


def _constant(step: int, value: float) -> float:
    return value


def _decay(step: int, kind: str, total_steps: int, milestones: tuple[int, ...], gamma: float) -> float:
    if kind == "step":
        return gamma ** bisect.bisect_right(milestones, step)
    progress = min(step, total_steps) / max(total_steps, 1)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "linear":
        return 1.0 - progress
    return 1.0


def _multiplier(
    step: int, kind: str, total_steps: int, warmup_steps: int, milestones: tuple[int, ...], gamma: float
) -> float:
    # Warm-up as in open_lth: linear from 0 over the first warmup_steps updates, then the decay schedule.
    warm = min(1.0, step / warmup_steps) if warmup_steps else 1.0
    return warm * _decay(step, kind, total_steps, milestones, gamma)
