"""One grid point from one or more evaluations: the unit grid (grid.py), the weights kind (weights.py) and the
transfer study (transfer.py) average their random draws the same way."""

from __future__ import annotations

import statistics
from typing import Any


def mean_point(points: list[dict[str, Any]]) -> dict[str, Any]:
    """One grid point from one or more evaluations (random draws): means and spreads, and per prompt the mean hits
    over the draws (what the interval resamples)."""
    accs, losses = [p["acc"] for p in points], [p["loss"] for p in points]
    out = {
        "acc": statistics.fmean(accs),
        "acc_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "loss": statistics.fmean(losses),
        "loss_sd": statistics.stdev(losses) if len(losses) > 1 else 0.0,
        "by_context": None,
    }
    if "hits" in points[0]:
        out["hits"] = [statistics.fmean(h) for h in zip(*(p["hits"] for p in points), strict=True)]
    if len(points) > 1:
        out["draws_acc"] = accs
    contexts = [p["by_context"] for p in points]
    if contexts[0] is not None:
        out["by_context"] = {
            "examples": contexts[0]["examples"],
            "acc": [statistics.fmean(c["acc"][i] for c in contexts) for i in range(len(contexts[0]["acc"]))],
            "count": contexts[0]["count"],
        }
    return out
