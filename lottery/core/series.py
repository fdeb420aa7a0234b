"""A checkpoint series: the steps of level 0's training at which its network is kept (train.save_at), so that a
study can ask of each point what it asks of the end (lottery/structured/series.py: removable fractions, dead units,
how early the importance ranking settles). Pure: steps in, steps out.

    train.save_at=[100, 400]    those steps
    train.save_at=geometric     1, 2, 4, 8, ... below the end of training (the end is level 0's own weights)
    train.save_at=geometric:64  64, 128, 256, ... below the end
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GEOMETRIC = "geometric"


class SeriesError(ValueError):
    pass


def series_steps(save_at: Any, total_steps: int) -> tuple[int, ...]:
    """The steps to keep, increasing and below `total_steps`; refuses a step at or past the end, or a malformed one."""
    if save_at is None or save_at == [] or save_at == ():
        return ()
    if isinstance(save_at, str):
        return _geometric(save_at, total_steps)
    if not isinstance(save_at, Sequence) or not all(isinstance(s, int) and not isinstance(s, bool) for s in save_at):
        raise SeriesError(
            f"train.save_at={save_at!r} must be a list of steps (e.g. [100, 400]), 'geometric' or 'geometric:<first>'"
        )
    steps = list(save_at)
    if sorted(set(steps)) != steps or steps[0] < 1:
        raise SeriesError(f"train.save_at={steps} must list increasing steps from 1 on, e.g. [100, 400]")
    if steps[-1] >= total_steps:
        raise SeriesError(
            f"train.save_at={steps} asks for step {steps[-1]}, at or past the end of training ({total_steps} steps, "
            "whose weights level 0 keeps anyway); give steps below it"
        )
    return tuple(steps)


def _geometric(spec: str, total_steps: int) -> tuple[int, ...]:
    name, _, first = spec.partition(":")
    try:
        start = int(first) if first else 1
    except ValueError:
        start = 0
    if name != GEOMETRIC or start < 1 or start & (start - 1):
        raise SeriesError(
            f"train.save_at={spec!r} is not 'geometric' or 'geometric:<first>' with a power of two first, e.g. "
            "geometric:64 (64, 128, 256, ... below the end of training)"
        )
    if start >= total_steps:
        raise SeriesError(f"train.save_at={spec!r} starts at step {start}, at or past the end ({total_steps} steps)")
    steps, step = [], start
    while step < total_steps:
        steps.append(step)
        step *= 2
    return tuple(steps)
