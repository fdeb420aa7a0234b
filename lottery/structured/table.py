"""The structured summary table a run prints: per procedure, score and unit kind, the share of units removable within
tolerance and the accuracy there (from structured.json's report)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from lottery.branches.registry import BRANCHES


def chosen_by(branch: str, score: str) -> str:
    """What chose a branch's removed units: the run's score, chance, or (random_reinit) the trunk's mask."""
    chooser = BRANCHES[branch].units_chosen_by if branch in BRANCHES else None
    return score if chooser == "score" else (chooser or branch)


def summary_table(report: dict[str, Any]) -> Table:
    dense, tol = report["dense"]["test_acc"], report["tolerance"]
    dense_point = {"acc": dense, "acc_ci": report["dense"].get("test_acc_ci")}
    confidence = report.get("confidence")
    table = Table(title="units removable with at most the tolerated loss of test accuracy")
    for column in ("procedure", "score", "unit kind", "removable", "accuracy there"):
        table.add_column(column, justify="left" if column in ("procedure", "score", "unit kind") else "right")
    for kind, by_score in report.get("no_retrain", {}).items():
        for score, result in by_score.items():
            fraction = result["removable_fraction"]
            if fraction is None:  # dense is too close to chance to claim anything
                table.add_row("no retraining", score, kind, "not claimed", "")
                continue
            at = [p for p in result["curve"] if p["fraction"] == fraction]
            shown = f"{fraction:.0%}" + _point(fraction, result.get("removable_point"))
            table.add_row("no retraining", score, kind, shown, _acc(at[0]) if at else _acc(dense_point))
    imp = report.get("imp")
    if imp:
        # what chose the removed units: the score, chance, or (random_reinit) the trunk's mask
        lines = [("IMP", imp["score"], imp["trunk"])]
        lines += [(f"IMP {b}", chosen_by(b, imp["score"]), v) for b, v in imp["branches"].items()]
        for name, score, summary in lines:
            for kind, fraction in summary["removable"].items():
                at = [r["test_acc"] for r in summary["levels"] if r["removed"][kind] == fraction]
                table.add_row(name, score, kind, f"{fraction:.0%}", f"{max(at):.2%}" if at else f"{dense:.2%}")
    combined = report.get("combined") or {}
    if "curve" in combined:
        fraction = combined["removable_fraction"]
        at = [p for p in combined["curve"] if p["fraction"] == fraction]
        label = f"{combined['heads_fraction']:.0%} of heads ({combined['heads_score']}), then"
        shown = f"{fraction:.0%}" + _point(fraction, combined.get("removable_fraction_point"))
        table.add_row(label, "gradient", "mlp_blocks", shown, _acc(at[0]) if at else _acc(combined["heads_only"]))
    table.caption = (
        f"dense test accuracy {_acc(dense_point)}, chance "
        f"{report['chance']:.2%}, tolerance {tol:.1%} (ticket.match_tolerance)"
    )
    if confidence is not None:
        table.caption += (
            f"; removable: the drop from dense within tolerance at {confidence:.0%} confidence (bootstrap over "
            f"{report.get('held_out_queries')} held-out queries); [brackets]: {confidence:.0%} intervals"
        )
    if "claim" in report:
        table.caption += f"; {report['claim']}"
    return table


def _acc(point: dict[str, Any]) -> str:
    ci = point.get("acc_ci")
    return f"{point['acc']:.2%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")


def _point(fraction: float, point: float | None) -> str:
    """The point-estimate walk's fraction, where it claims more than the interval does."""
    return "" if point is None or point == fraction else f" ({point:.0%} by the point estimate)"


def weights_table(report: dict[str, Any]) -> Table:
    """The weights kind: per score and density, perplexity (loss on text) and accuracy with their intervals."""
    w = report["weights"]
    dense = w["dense"]
    table = Table(title=f"weights pruned without retraining ({w['weights']:,} weights in {w['matrices']} matrices)")
    for column in ("score", "pattern", "density", "perplexity", "accuracy"):
        table.add_column(column, justify="left" if column in ("score", "pattern") else "right")
    table.add_row("dense", "", "100.0%", _ppl(dense), _acc(dense))
    for score, result in report["no_retrain"].get("weights", {}).items():
        for p in result["curve"]:
            table.add_row(score, "unstructured", f"{p['density']:.1%}", _ppl(p), _acc(p))
    for pattern, by_score in report.get("weight_patterns", {}).items():
        for score, p in by_score.items():
            table.add_row(score, pattern, f"{p['density']:.1%}", _ppl(p), _acc(p))
    within = ", ".join(f"{sc} within each {where}" for sc, where in w["compared_within"].items())
    table.caption = f"weights compared: {within}; [brackets]: intervals over the held-out prompts"
    if w.get("calibration_prompts"):
        calibration = f"{w['calibration_prompts']} training prompts ({w['calibration_tokens']:,} tokens)"
        table.caption += f"; Wanda calibrated on {calibration}"
    return table


def _ppl(point: dict[str, Any]) -> str:
    ci = point.get("perplexity_ci")
    return f"{point['perplexity']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
