"""What a structured run does after its trunk (and control branch): the no-retrain grid on the dense level 0
(structured.procedure no_retrain or both), then seed_<s>/structured.json and its figures, and a summary table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console

from lottery.console import print_table
from lottery.core import artifacts
from lottery.structured.level0 import grid_on_level0
from lottery.structured.report import write_report
from lottery.structured.table import summary_table

if TYPE_CHECKING:
    from lottery.structured.spec import StructuredSpec


def finish_structured(setup: StructuredSpec, console: Console | None = None) -> dict[str, Any]:
    procedure = setup.cfg.structured.procedure
    path = setup.paths.seed_dir / "no_retrain" / "results.json"
    if procedure in ("no_retrain", "both"):  # one evaluator for every network (lottery/structured/level0.py)
        no_retrain = grid_on_level0(setup)
    else:  # imp only: keep showing an earlier grid of this seed, if there is one
        no_retrain = artifacts.read_json(path, "no-retrain results") if path.is_file() else None
    report = write_report(setup, no_retrain)
    print_table(summary_table(report), console)
    return report
