"""Mask overlap across seeds for `lottery-compare`: do tickets drawn from different seeds keep the same weights?

For every experiment with two or more seeds, every pair of seeds, every trunk level both have and every layer (and
all layers pooled, `*`): the Jaccard overlap of the kept weights, the overlap two independent random masks of the
same densities would have, and the share of weights kept by both whose values at the rewind point have the same sign.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from lottery.core import artifacts
from lottery.core.artifacts import PREFIX
from lottery.core.layout import level_dirs, level_of
from lottery.core.overlap import expected_random_jaccard, jaccard, sign_agreement
from lottery.reports.collect import CSV_LINE_END, Experiment
from lottery.reports.plotting import pyplot, save


def _rewind_weights(seed_dir: Path) -> dict[str, torch.Tensor] | None:
    path = seed_dir / "rewind.ckpt"
    if not path.is_file():
        return None
    state = artifacts.load_torch(path, "rewind checkpoint")["state_dict"]
    return {k.removeprefix(PREFIX): v for k, v in state.items()}


def _ratio(observed: float, x: torch.Tensor, y: torch.Tensor) -> float:
    """Observed overlap over the overlap two random masks of the same densities would have (1: no more than chance)."""
    expected = expected_random_jaccard(x.numel(), int(x.sum()), int(y.sum()))
    return observed / expected if expected > 0 else float("nan")


def pair_rows(exp: Experiment) -> list[dict[str, Any]]:
    rows = []
    seeds = exp.seed_dirs
    masks = {s: {} for s in seeds}
    for s in seeds:
        for level_dir in level_dirs(s):
            if (level_dir / "metrics.json").is_file():
                masks[s][level_of(level_dir)] = artifacts.load_torch(level_dir / "mask.pt", "mask")
    rewound = {s: _rewind_weights(s) for s in seeds}
    for a, b in itertools.combinations(seeds, 2):
        for level in sorted(set(masks[a]) & set(masks[b])):
            ma, mb = masks[a][level], masks[b][level]
            pooled_a = torch.cat([ma[n].flatten() for n in ma])
            pooled_b = torch.cat([mb[n].flatten() for n in ma])
            layers = [(n, ma[n], mb[n]) for n in ma] + [("*", pooled_a, pooled_b)]
            for name, x, y in layers:
                agree = float("nan")
                if rewound[a] is not None and rewound[b] is not None:
                    if name == "*":
                        wa = torch.cat([rewound[a][n].flatten() for n in ma])
                        wb = torch.cat([rewound[b][n].flatten() for n in ma])
                    else:
                        wa, wb = rewound[a][name], rewound[b][name]
                    agree = sign_agreement(wa, wb, x & y)
                rows.append(
                    {
                        "label": exp.label,
                        "hash": exp.path.name,
                        "seed_a": a.name,
                        "seed_b": b.name,
                        "level": level,
                        "layer": name,
                        "density_a": int(x.sum()) / x.numel(),
                        "density_b": int(y.sum()) / y.numel(),
                        "jaccard": jaccard(x, y),
                        "random_jaccard": expected_random_jaccard(x.numel(), int(x.sum()), int(y.sum())),
                        "jaccard_over_random": _ratio(jaccard(x, y), x, y),
                        "sign_agreement": agree,
                    }
                )
    return rows


def heatmap(rows: list[dict[str, Any]], out: Path) -> None:
    """Level x layer overlap relative to chance (observed Jaccard / the random-mask expectation; 1 = chance): a raw
    Jaccard rises as masks get denser whatever the seeds share, the ratio does not. The CSV keeps the raw Jaccard."""
    plt = pyplot()

    by_exp: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_exp.setdefault(r["label"], []).append(r)
    shown = list(by_exp.items())[:6]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.2), squeeze=False)
    for ax, (label, rs) in zip(axes[0], shown, strict=False):
        levels = sorted({r["level"] for r in rs})
        layers = list(dict.fromkeys(r["layer"] for r in rs))
        grid = [
            [
                statistics.fmean(r["jaccard_over_random"] for r in rs if r["level"] == lv and r["layer"] == ly)
                for ly in layers
            ]
            for lv in levels
        ]
        top = max([1.0, *(v for row in grid for v in row if v == v)])
        image = ax.imshow(grid, vmin=0, vmax=top, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(levels)), [str(lv) for lv in levels], fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("level")
        ax.set_title(label[:60], fontsize=7)
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                colour = "w" if value < 0.6 * top else "k"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color=colour)
        fig.colorbar(image, ax=ax, fraction=0.046, label="Jaccard across seeds / random-mask expectation")
    save(fig, out)


def overlap_report(experiments: list[Experiment], out_dir: Path, console: Console) -> list[dict[str, Any]]:
    rows = [r for e in experiments for r in pair_rows(e)]
    artifacts.write_csv(rows, out_dir / "mask_overlap.csv", lineterminator=CSV_LINE_END)
    if not rows:
        console.print("mask overlap: every configuration has a single seed; nothing to compare")
        return rows
    heatmap(rows, out_dir / "mask_overlap.png")
    table = Table(title="mask overlap across seeds, all layers pooled (mean over seed pairs)")
    for column in ("configuration", "level", "density", "jaccard", "random", "sign agreement"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    pooled = [r for r in rows if r["layer"] == "*"]
    previous = None
    for label in dict.fromkeys(r["label"] for r in pooled):
        for level in sorted({r["level"] for r in pooled if r["label"] == label}):
            rs = [r for r in pooled if r["label"] == label and r["level"] == level]
            shown, previous = (label if label != previous else ""), label
            table.add_row(
                shown,
                str(level),
                f"{statistics.fmean(r['density_a'] for r in rs):.2%}",
                f"{statistics.fmean(r['jaccard'] for r in rs):.3f}",
                f"{statistics.fmean(r['random_jaccard'] for r in rs):.3f}",
                f"{statistics.fmean(r['sign_agreement'] for r in rs):.3f}",
            )
    console.print(table)
    return rows
