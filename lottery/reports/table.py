"""The ticket table printed at the end of a run (rich): one row per level, with each control branch that exists,
and under it the one-sentence summary (the lowest density that still matches dense)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from lottery.console import print_table


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def ticket_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    branches = summary["branches"]
    key = summary.get("metric_key", "test_acc")
    # final: the test accuracy after the last step; early_stop: at the step of minimum validation loss (LTH's metric)
    label = "test acc" if key == "test_acc" else "early-stop test acc"
    for column in ("level", "density", label, "best val acc", "at step", *[f"{b} acc" for b in branches]):
        table.add_column(column, justify="right")
    for r in summary["levels"]:
        controls = [_pct(r["controls"].get(b, {}).get(key)) for b in branches]
        table.add_row(
            str(r["level"]),
            _pct(r["density"]),
            _pct(r[key]),
            _pct(r["best_val_acc"]),
            str(r["best_val_step"]),
            *controls,
        )
    if summary["min_matching_density"] is not None:
        table.caption = (
            f"dense {label} {_pct(summary['dense_test_acc'])}; lowest density within "
            f"{summary['match_tolerance']:.1%} of it: {_pct(summary['min_matching_density'])} "
            f"(level {summary['min_matching_level']})"
        )
    return table


def print_ticket_table(summary: dict[str, Any], title: str, console: Console | None = None) -> None:
    """The table, then its summary sentence on one line of its own (lottery/console/ says why)."""
    print_table(ticket_table(summary, title), console)
