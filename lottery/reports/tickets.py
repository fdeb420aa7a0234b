"""Ticket quality of one seed's run, recomputed from the level records on disk (seed_<s>/tickets.json):

* dense_test_acc: level 0's test accuracy;
* min_matching_density: the lowest trunk density whose test accuracy is within `match_tolerance` of dense;
* per level: the ticket's density, test accuracy, best validation accuracy and its step (the early-stopping iteration
  of the LTH paper), the same for every control branch that exists, and the ticket's margin over each control.
"""

from __future__ import annotations

from typing import Any

from lottery.core import artifacts
from lottery.core.layout import LevelPaths, RunPaths, branch_of, level_dirs

KEYS = ("density", "test_acc", "best_val_acc", "best_val_step")


def _levels(level_dirs) -> dict[int, dict[str, Any]]:
    out = {}
    for d in level_dirs:
        lp = LevelPaths(d)
        if lp.done:
            metrics = artifacts.read_json(lp.metrics, "level metrics")
            out[int(metrics["level"])] = metrics
    return out


def summarize(paths: RunPaths, match_tolerance: float) -> dict[str, Any]:
    trunk = _levels(paths.level_dirs())
    branches = {branch_of(d): _levels(level_dirs(d)) for d in paths.branch_dirs()}
    # Branches that train comparable levels (controls, early-bird tickets); the instability analysis trains copies of
    # the trunk's own levels, which are not a separate line.
    branches = {name: records for name, records in branches.items() if records}
    dense = trunk[0]["test_acc"] if 0 in trunk else None
    levels = []
    for level in sorted(trunk):
        row: dict[str, Any] = {"level": level, **{k: trunk[level][k] for k in KEYS}, "controls": {}, "margin": {}}
        for name, records in branches.items():
            if level in records:
                row["controls"][name] = {k: records[level][k] for k in KEYS}
                row["margin"][name] = trunk[level]["test_acc"] - records[level]["test_acc"]
        levels.append(row)
    matching = [r for r in levels if dense is not None and r["test_acc"] >= dense - match_tolerance]
    lowest = min(matching, key=lambda r: r["density"]) if matching else None
    return {
        "dense_test_acc": dense,
        "match_tolerance": match_tolerance,
        "min_matching_density": lowest["density"] if lowest else None,
        "min_matching_level": lowest["level"] if lowest else None,
        "branches": sorted(branches),
        "levels": levels,
    }


def write(paths: RunPaths, match_tolerance: float) -> dict[str, Any]:
    summary = summarize(paths, match_tolerance)
    artifacts.write_json(summary, paths.tickets)
    return summary
