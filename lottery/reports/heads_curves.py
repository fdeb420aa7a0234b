"""Accuracy against units removed, across seeds, for `lottery-compare`: from every seed's structured.json, the
no-retrain curves (per score, unit kind and grid fraction) and the structured IMP levels (trunk and controls), as
mean and standard deviation over the seeds that have the point."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from lottery.reports.collect import Experiment
from lottery.reports.plotting import pyplot, save


def _points(report: dict[str, Any]) -> list[tuple[str, str, str, float, float]]:
    """(procedure, score or line, kind, fraction removed, accuracy) of one seed, the dense point included."""
    dense = report["dense"]["test_acc"]
    out = []
    for kind, by_score in report.get("no_retrain", {}).items():
        for score, result in by_score.items():
            out.append(("no_retrain", score, kind, 0.0, dense))
            out += [("no_retrain", score, kind, p["fraction"], p["acc"]) for p in result["curve"]]
    imp = report.get("imp")
    if imp:
        lines = [(f"imp {imp['score']}", imp["trunk"])] + [(f"imp {b}", v) for b, v in imp["branches"].items()]
        for line, summary in lines:
            for kind in imp["units"]:
                out += [("imp", line, kind, r["removed"][kind], r["test_acc"]) for r in summary["levels"]]
    return out


def curve_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    rows = []
    for e in experiments:
        groups: dict[tuple[str, str, str, float], list[float]] = defaultdict(list)
        for seed_dir in e.seed_dirs:
            path = Path(seed_dir) / "structured.json"
            if path.is_file():
                for procedure, line, kind, fraction, acc in _points(json.loads(path.read_text())):
                    groups[(procedure, line, kind, round(fraction, 6))].append(acc)
        for (procedure, line, kind, fraction), accs in sorted(groups.items()):
            rows.append(
                {
                    "label": e.label,
                    "procedure": procedure,
                    "line": line,
                    "kind": kind,
                    "removed": fraction,
                    "mean": statistics.fmean(accs),
                    "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "seeds": len(accs),
                }
            )
    return rows


def plot_heads_removed(rows: list[dict[str, Any]], out: Path) -> None:
    plt = pyplot()

    heads = [r for r in rows if r["kind"] == "heads"]
    if not heads:
        return
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in heads:
        lines[f"{r['label']} · {r['procedure']} {r['line']}".replace("imp imp", "imp")].append(r)
    for i, (label, rs) in enumerate(lines.items()):
        rs = sorted(rs, key=lambda r: r["removed"])
        dashed = "random" in label
        ax.errorbar(
            [100 * r["removed"] for r in rs],
            [100 * r["mean"] for r in rs],
            yerr=[100 * r["std"] for r in rs],
            marker="x" if dashed else "o",
            linestyle="--" if dashed else "-",
            color=f"C{i % 10}",
            markersize=3,
            capsize=2,
            label=f"{label} (n={max(r['seeds'] for r in rs)})",
        )
    ax.set_xlabel("attention heads removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    save(fig, out)
