"""Instability against the rewind point for `lottery-compare`: from which step k is training stable?

Reads every seed's branch_instability/level_<L>/instability.json (written by branch=instability) and, per
configuration and level, puts the error barrier and the trunk's ticket accuracy side by side for each rewind point k
found in the sweep (one experiment folder per k, since rewind.step is hashed). The earliest k whose mean barrier is
below the threshold is the earliest stable rewind point (Frankle et al. 2020 read it off the same two curves).

Writes instability_vs_rewind.csv/.png (barrier and ticket accuracy against k, one line per configuration and level).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lottery.console import print_table
from lottery.core import artifacts
from lottery.core.layout import level_dirs
from lottery.reports.collect import CSV_LINE_END, Experiment
from lottery.reports.plotting import pyplot, save

SWEPT = "rewind.step"


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect_records(experiments: list[Experiment]) -> list[dict[str, Any]]:
    """One row per (configuration other than the rewind point, level, rewind step), averaged over seeds."""
    varying = sorted(
        k
        for k in {k for e in experiments for k in e.settings}
        if k != SWEPT
        and not k.startswith("model._target_")
        and len({json.dumps(e.settings.get(k)) for e in experiments}) > 1
    )
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in experiments:
        label = ", ".join(f"{k}={e.settings.get(k)}" for k in varying if e.settings.get(k) not in (None, "[]", "{}"))
        label = label or str(e.settings.get("name"))
        for seed_dir in e.seed_dirs:
            for level_dir in level_dirs(seed_dir / "branch_instability"):
                path = level_dir / "instability.json"
                if not path.is_file():
                    continue
                record = json.loads(path.read_text())
                trunk = seed_dir / f"level_{record['level']}" / "metrics.json"
                record["ticket_test_acc"] = json.loads(trunk.read_text())["test_acc"]
                groups[(label, record["level"], record["rewind_step"])].append(record)
    rows = []
    for (label, level, k), records in sorted(groups.items()):
        barrier, barrier_sd = _stats([r["barrier"] for r in records])
        acc, acc_sd = _stats([r["ticket_test_acc"] for r in records])
        rows.append(
            {
                "label": label,
                "level": level,
                "density": statistics.fmean(r["density"] for r in records),
                "rewind_step": k,
                "barrier": barrier,
                "barrier_std": barrier_sd,
                "ticket_test_acc": acc,
                "ticket_test_acc_std": acc_sd,
                "threshold": records[0]["threshold"],
                "stable": barrier < records[0]["threshold"],
                "seeds": len(records),
            }
        )
    return rows


def earliest_stable(rows: list[dict[str, Any]]) -> dict[tuple[str, int], int | None]:
    """Per (configuration, level): the smallest rewind step whose mean barrier is under the threshold, or None."""
    out: dict[tuple[str, int], int | None] = {}
    for r in sorted(rows, key=lambda r: r["rewind_step"]):
        key = (r["label"], r["level"])
        out.setdefault(key, None)
        if out[key] is None and r["stable"]:
            out[key] = r["rewind_step"]
    return out


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    plt = pyplot()

    lines: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        lines[(r["label"], r["level"])].append(r)
    fig, (ax_barrier, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, ((label, level), rs) in enumerate(sorted(lines.items())):
        rs = sorted(rs, key=lambda r: r["rewind_step"])
        ks = [r["rewind_step"] for r in rs]
        name = f"{label} · level {level} ({100 * rs[0]['density']:.3g}%)"
        for ax, key in ((ax_barrier, "barrier"), (ax_acc, "ticket_test_acc")):
            ax.errorbar(
                ks,
                [100 * r[key] for r in rs],
                yerr=[100 * r[f"{key}_std"] for r in rs],
                marker="o",
                markersize=3,
                capsize=2,
                color=f"C{i % 10}",
                label=name,
            )
    ax_barrier.axhline(100 * rows[0]["threshold"], color="grey", linestyle="--", linewidth=1, label="stable below")
    for ax, ylabel in ((ax_barrier, "test-error barrier (%)"), (ax_acc, "ticket test accuracy (%)")):
        ax.set_xscale("symlog", linthresh=10)  # k = 0 sits at the origin, later points on a log scale
        ax.set_xlim(-2, 1.5 * max(1, max(r["rewind_step"] for r in rows)))  # no empty negative half
        ax.set_xlabel("rewind step k (iterations)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_barrier.legend(fontsize=6)
    save(fig, out)


def instability_report(experiments: list[Experiment], out_dir: Path, console: Console) -> list[dict[str, Any]]:
    rows = collect_records(experiments)
    if not rows:
        return rows
    artifacts.write_csv(rows, out_dir / "instability_vs_rewind.csv", lineterminator=CSV_LINE_END)
    plot(rows, out_dir / "instability_vs_rewind.png")
    first = earliest_stable(rows)
    table = Table(title="instability against the rewind point k, mean over seeds")
    for column in ("configuration", "level", "density", "k", "barrier", "ticket acc", "stable", "seeds"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for r in rows:
        table.add_row(
            r["label"],
            str(r["level"]),
            f"{r['density']:.2%}",
            str(r["rewind_step"]),
            f"{100 * r['barrier']:.2f} ± {100 * r['barrier_std']:.2f}",
            f"{100 * r['ticket_test_acc']:.2f}",
            "yes" if r["stable"] else "no",
            str(r["seeds"]),
        )
    table.caption = "earliest stable k: " + "; ".join(
        f"{label} level {level}: {'none' if k is None else k}" for (label, level), k in sorted(first.items())
    )
    print_table(table, console)
    return rows
