"""Figures of the reports: one place that selects matplotlib's file-only backend, and the accuracy-against-density
plot shared by `lottery-compare` and the end-of-run summary (lines styled by lottery/branches/registry.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.branches.registry import line_style

# Spare (marker, line style) pairs for a second line of the same style in one configuration (two early-bird searches).
SPARE_STYLES = [("v", (0, (1, 1))), ("P", (0, (8, 2))), ("*", (0, (3, 1, 1, 1, 1, 1))), ("h", (0, (2, 3)))]


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures are files, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path) -> None:
    """Write a figure to `out` (150 dpi, tight layout) and release it."""
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    pyplot().close(fig)


def plot(summaries: dict[str, list[dict[str, Any]]], metric: str, out: Path) -> None:
    """One line per key of `summaries` (rows of density/mean/std/seeds), keyed `<settings> · <line>` or `<line>`:
    every line its own colour, the line style saying what it is (the ticket solid, each control its own dashes), and a
    legend naming the line and the settings that differ."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    used: dict[str, set] = {}
    drawn = 0
    for label, rows in summaries.items():
        if not rows:
            continue
        config, _, line = label.rpartition(" · ")
        colour = f"C{drawn % 10}"
        drawn += 1
        style = line_style(line)
        if style in used.setdefault(config, set()):  # e.g. two early_bird searches: give the second its own look
            style = next((s for s in SPARE_STYLES if s not in used[config]), style)
        used[config].add(style)
        ax.errorbar(
            [100 * r["density"] for r in rows],
            [100 * r["mean"] for r in rows],
            yerr=[100 * r["std"] for r in rows],
            marker=style[0],
            linestyle=style[1],
            color=colour,
            markersize=3,
            capsize=2,
            label=f"{label} (n={max(r['seeds'] for r in rows)})",
        )
    densities = [100 * r["density"] for rows in summaries.values() for r in rows]
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if min(densities) * 0.8 <= t <= 100]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()  # sparser to the right, as in the lottery-ticket papers
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    save(fig, out)
