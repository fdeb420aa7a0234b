"""Ticket quality of one seed's run, recomputed from the level records on disk (seed_<s>/tickets.json):

* metric: which test accuracy judges the tickets (`ticket.metric`): `final` (after the last step, `test_acc`) or
  `early_stop` (at the evaluation step of minimum validation loss, `early_stop_test_acc`: the LTH paper's metric);
* dense_test_acc: level 0's accuracy by that metric;
* min_matching_density: the sparsest trunk level such that it and every denser level are within `match_tolerance` of
  dense (lottery/core/matching.py); min_matching_density_anywhere: the sparsest level within it, failures before it
  or not, reported beside it;
* per level: the ticket's density, both test accuracies, best validation accuracy and its step, the early-stopping
  step, the steps it trained, the same for every control branch that exists, and the ticket's margin over each
  control by the chosen metric.
"""

from __future__ import annotations

from typing import Any

from lottery.core import artifacts
from lottery.core.layout import LevelPaths, RunPaths, branch_of, level_dirs
from lottery.core.matching import last_matching

METRIC_KEYS = {"final": "test_acc", "early_stop": "early_stop_test_acc"}
KEYS = (
    "density",
    "test_acc",
    "early_stop_test_acc",
    "best_val_acc",
    "best_val_step",
    "early_stop_step",
    "start_step",
    "steps_trained",
)


def _levels(level_dirs) -> dict[int, dict[str, Any]]:
    out = {}
    for d in level_dirs:
        lp = LevelPaths(d)
        if lp.done:
            metrics = artifacts.read_json(lp.metrics, "level metrics")
            out[int(metrics["level"])] = metrics
    return out


def _record(metrics: dict[str, Any]) -> dict[str, Any]:
    """The KEYS of a level's metrics (levels written before a key existed get None for it)."""
    return {k: metrics.get(k) for k in KEYS}


def summarize(paths: RunPaths, match_tolerance: float, metric: str = "final") -> dict[str, Any]:
    key = METRIC_KEYS[metric]
    trunk = _levels(paths.level_dirs())
    # Branches that train comparable levels (controls, early-bird tickets); the instability analysis trains copies of
    # the trunk's own levels, which are not a separate line.
    branches = {branch_of(d): _levels(level_dirs(d)) for d in paths.branch_dirs()}
    branches = {name: records for name, records in branches.items() if records}

    def acc(record: dict[str, Any]) -> float:
        value = record.get(key)
        return float("nan") if value is None else value

    dense = acc(trunk[0]) if 0 in trunk else None
    levels = []
    for level in sorted(trunk):
        row: dict[str, Any] = {"level": level, **_record(trunk[level]), "controls": {}, "margin": {}}
        for name, records in branches.items():
            if level in records:
                row["controls"][name] = _record(records[level])
                row["margin"][name] = acc(trunk[level]) - acc(records[level])
        levels.append(row)
    lowest = anywhere = None
    if dense is not None:
        lowest = last_matching([(r, acc(r)) for r in levels], dense, match_tolerance)
        matching = [r for r in levels if acc(r) >= dense - match_tolerance]
        anywhere = min(matching, key=lambda r: r["density"]) if matching else None
    return {
        "metric": metric,
        "metric_key": key,
        "dense_test_acc": dense,
        "match_tolerance": match_tolerance,
        "min_matching_density": lowest["density"] if lowest else None,
        "min_matching_level": lowest["level"] if lowest else None,
        "min_matching_density_anywhere": anywhere["density"] if anywhere else None,
        "min_matching_level_anywhere": anywhere["level"] if anywhere else None,
        "branches": sorted(branches),
        "levels": levels,
    }


def write(paths: RunPaths, match_tolerance: float, metric: str = "final") -> dict[str, Any]:
    summary = summarize(paths, match_tolerance, metric)
    artifacts.write_json(summary, paths.tickets)
    return summary
