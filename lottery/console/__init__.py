"""The one place that builds the rich Console every printer of a run uses (start block, level lines, the ticket
table, instability and structured tables, lottery-compare). A package of its own below every layer that prints
(training, branches, structured, reports, the spine), so printing draws no import between them.

On a terminal rich does what it always does: colours, the terminal's width, wrapping at its edge. Anywhere else (a
log file, SLURM's output, a pipe) nothing reads colours and nothing resizes, so lines go out whole: no ANSI codes,
no wrapping (`soft_wrap`), and tables laid out at their natural width rather than squeezed into rich's default of 80
columns (or whatever COLUMNS says), which cut them and split captions mid-phrase.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

# Wide enough that no table of ours is ever squeezed; rich sizes a table (expand=False) to its content, so this is
# an upper bound, not a width anything is padded to.
UNBOUNDED_WIDTH = 10_000


def console(stderr: bool = False) -> Console:
    """A Console for stdout (or stderr). The stream is looked up when printing, not here, so output reaches
    whatever sys.stdout is at that moment (pytest's capture, a progress bar's redirect)."""
    stream = sys.stderr if stderr else sys.stdout
    if _is_terminal(stream):
        return Console(stderr=stderr)
    return Console(
        stderr=stderr,
        width=UNBOUNDED_WIDTH,
        soft_wrap=True,
        no_color=True,
        color_system=None,
        highlight=False,
        emoji=False,
    )


def say(text: str, stderr: bool = False) -> None:
    """One line of plain text (paths and settings may hold brackets: no rich markup), never wrapped by us."""
    console(stderr).print(text, markup=False, highlight=False, soft_wrap=True)


def print_table(table: Table, out: Console | None = None) -> None:
    """A table, then its caption as a line of its own: rich wraps a caption at the table's width, which splits a
    summary sentence mid-phrase under a narrow table."""
    out = out or console()
    caption, table.caption = table.caption, None
    out.print(table)
    if caption:
        out.print(caption, markup=False, highlight=False, soft_wrap=True)


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal, as rich judges it (a tty, or TTY_COMPATIBLE=1 / FORCE_COLOR claiming one): the
    progress bar is drawn only then; in a log file it would only leave frames beside the level lines."""
    return Console(file=sys.stdout).is_terminal


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a replaced stream without isatty, or a closed one
        return False
