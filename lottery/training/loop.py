"""The one level loop: the IMP trunk (lottery/imp.py) and every control branch (lottery/branches/controls.py) walk
their levels the same way, for one seed or several in lock step. At each level a seed whose level is known (finished
earlier, or reused) contributes its row; the others' fits train together as one stack (lottery/training/fit.py); each
finished level writes its artifacts and the seed's levels.csv at once, so a kill between levels loses nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lottery.training import fit, results
from lottery.training.spec import RunSpec
from lottery.training.tracking import Tracker


def lock_step(
    setups: Sequence[RunSpec],
    trackers: Sequence[Tracker],
    levels: range,
    known: Callable[[RunSpec, int, Tracker], dict[str, Any] | None],
    spec_of: Callable[[RunSpec, int], fit.LevelFit],
    csv_of: Callable[[RunSpec], Path],
    label_of: Callable[[RunSpec], str],
    key: bool = True,
) -> list[list[dict[str, Any]]]:
    """Each seed's rows, level by level: `known` gives a finished level's row (or None), `spec_of` the fit of a level
    to train, `csv_of` where a seed's levels.csv goes, `label_of` a seed's name in a stack's lines; `key`: record the
    level key that lets other schedules reuse a level (trunk levels only)."""
    rows: list[list[dict[str, Any]]] = [[] for _ in setups]
    for level in levels:
        pending: list[tuple[int, fit.LevelFit]] = []
        for i, setup in enumerate(setups):
            row = known(setup, level, trackers[i])
            if row is not None:
                rows[i].append(row)
                continue
            spec = spec_of(setup, level)
            if len(setups) > 1:
                spec = replace(spec, label=label_of(setup))  # names its lines
            pending.append((i, spec))
        if not pending:
            continue
        chosen = [setups[i] for i, _ in pending]
        trained = fit.fit_levels(chosen, [s for _, s in pending], [trackers[i] for i, _ in pending])
        for (i, spec), replica in zip(pending, trained, strict=True):
            rows[i].append(results.finish_level(setups[i], spec, replica, trackers[i], key=key))
            results.write_levels_csv(csv_of(setups[i]), rows[i])
    for setup, seed_rows in zip(setups, rows, strict=True):
        if seed_rows:
            results.write_levels_csv(csv_of(setup), seed_rows)
    return rows
