"""The ticket table printed at the end of a run (rich), one row per level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def ticket_table(rows: Sequence[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("level", "density", "test acc", "best val acc", "at step", "train s"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["level"]),
            f"{r['density']:.2%}",
            f"{r['test_acc']:.2%}",
            f"{r['best_val_acc']:.2%}",
            str(r["best_val_step"]),
            f"{r['train_seconds']:.1f}",
        )
    return table


def print_ticket_table(rows: Sequence[dict[str, Any]], title: str, console: Console | None = None) -> None:
    (console or Console()).print(ticket_table(rows, title))
