"""Measuring and summarising: the Timer the workers put around evaluations and checkpoint saves, and the parent's
fit of each level's wall time to `start-up + steps * per-step`, the medians over repeats and the JSON clean-up.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any


class Timer:
    """Counts calls and wall time of the wrapped code; used only around evaluations and checkpoint saves, so the
    instrumentation adds nothing to an ordinary step."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def wrap(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start

        return timed


def fit_line(n: int, t1: float, t2: float) -> tuple[float, float]:
    """(start-up, per-step) of the line through (n, t1) and (2n, t2)."""
    per_step = (t2 - t1) / n
    return t1 - n * per_step, per_step


def summarise_repeat(r: dict[str, Any], n: int) -> dict[str, float]:
    one, two, warm = r["runs"][str(n)], r["runs"][str(2 * n)], r["warmup"]
    startup, per_step = fit_line(n, one["seconds"], two["seconds"])

    def overhead(run: dict[str, Any]) -> float:
        return run["seconds"] - run["eval_seconds"] - run["ckpt_seconds"]

    _, per_step_net = fit_line(n, overhead(one), overhead(two))
    out = {
        "per_step_s": per_step,
        "per_step_net_s": per_step_net,
        "startup_s": startup,
        "first_level_startup_s": warm["seconds"] - warm["steps"] * per_step,
        "eval_ms": 1e3 * two["eval_seconds"] / two["evals"] if two["evals"] else float("nan"),
        "evals": two["evals"],
        "ckpt_ms": 1e3 * two["ckpt_seconds"] / two["ckpts"] if two["ckpts"] else float("nan"),
        "ckpts": two["ckpts"],
        "peak_rss_mb": r["peak_rss_mb"],
        "rss_after_imports_mb": r["rss_after_imports_mb"],
        "final_val_loss": two["val_loss"],
        "density": two["density"],
        "prepare_s": two.get("prepare_seconds", float("nan")),
    }
    if "val_forward_ms" in r:
        out["val_forward_ms"] = r["val_forward_ms"]
    return out


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop nan
    return statistics.median(values) if values else float("nan")


def summarise(results: list[dict[str, Any]], n: int) -> dict[str, Any]:
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    per_repeat = [summarise_repeat(r, n) for r in results]
    keys = per_repeat[0].keys()
    summary = {k: median([p[k] for p in per_repeat]) for k in keys}
    summary["steps_per_s"] = 1.0 / summary["per_step_s"] if summary["per_step_s"] > 0 else float("nan")
    return summary


def strict_json(value: Any) -> Any:
    """NaN (a quantity that did not occur, e.g. no checkpoint in a short level) as null: JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value
