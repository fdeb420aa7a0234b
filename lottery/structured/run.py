"""What a structured run does after its trunk (and control branch): the no-retrain grid on the dense level 0
(structured.procedure no_retrain or both), then seed_<s>/structured.json and its figures, and a summary table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from lottery.branches.registry import BRANCHES
from lottery.core import artifacts
from lottery.reports.console import print_table
from lottery.structured.no_retrain import run_no_retrain
from lottery.structured.report import write_report

if TYPE_CHECKING:
    from lottery.setup import Setup


def finish_structured(setup: Setup, console: Console | None = None) -> dict[str, Any]:
    procedure = setup.cfg.structured.procedure
    path = setup.paths.seed_dir / "no_retrain" / "results.json"
    if procedure in ("no_retrain", "both"):
        no_retrain = run_no_retrain(setup)
    else:  # imp only: keep showing an earlier grid of this seed, if there is one
        no_retrain = artifacts.read_json(path, "no-retrain results") if path.is_file() else None
    report = write_report(setup, no_retrain)
    print_table(summary_table(report), console)
    return report


def chosen_by(branch: str, score: str) -> str:
    """What chose a branch's removed units: the run's score, chance, or (random_reinit) the trunk's mask."""
    chooser = BRANCHES[branch].units_chosen_by if branch in BRANCHES else None
    return score if chooser == "score" else (chooser or branch)


def summary_table(report: dict[str, Any]) -> Table:
    dense, tol = report["dense"]["test_acc"], report["tolerance"]
    table = Table(title="units removable with at most the tolerated loss of test accuracy")
    for column in ("procedure", "score", "unit kind", "removable", "accuracy there"):
        table.add_column(column, justify="left" if column in ("procedure", "score", "unit kind") else "right")
    for kind, by_score in report.get("no_retrain", {}).items():
        for score, result in by_score.items():
            fraction = result["removable_fraction"]
            at = [p["acc"] for p in result["curve"] if p["fraction"] == fraction]
            table.add_row("no retraining", score, kind, f"{fraction:.0%}", f"{at[0]:.2%}" if at else f"{dense:.2%}")
    imp = report.get("imp")
    if imp:
        # what chose the removed units: the score, chance, or (random_reinit) the trunk's mask
        lines = [("IMP", imp["score"], imp["trunk"])]
        lines += [(f"IMP {b}", chosen_by(b, imp["score"]), v) for b, v in imp["branches"].items()]
        for name, score, summary in lines:
            for kind, fraction in summary["removable"].items():
                at = [r["test_acc"] for r in summary["levels"] if r["removed"][kind] == fraction]
                table.add_row(name, score, kind, f"{fraction:.0%}", f"{max(at):.2%}" if at else f"{dense:.2%}")
    table.caption = (
        f"dense test accuracy {dense:.2%}, chance {report['chance']:.2%}, tolerance {tol:.1%} (ticket.match_tolerance)"
    )
    return table
