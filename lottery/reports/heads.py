"""`lottery-compare` on structured runs: do different seeds (and tasks) keep, and rank, the same heads?

head_overlap.csv   per experiment, pair of seeds and procedure point (each no-retrain score and grid fraction,
                   each structured IMP level): Jaccard overlap of the surviving heads, and what two random sets
                   of the same sizes would give
head_spearman.csv  Spearman rank correlation of head-importance scores (dense network, no-retrain scores):
                   across the seeds of an experiment, and across experiments (e.g. tasks) for the same seed.
                   `layer_spearman` correlates the per-layer sums: heads within a layer are exchangeable between
                   separately trained networks, so index-matched heads can only agree through their layer,
                   except where runs share an initialisation (the same seed and model shape)
heads_removed.csv/.png  test accuracy against the share of heads removed, mean and sd over seeds, per
                   experiment, score and procedure
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from lottery.core import artifacts
from lottery.core.overlap import expected_random_jaccard, jaccard
from lottery.reports.collect import CSV_LINE_END, Experiment
from lottery.reports.heads_curves import curve_rows, plot_heads_removed


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def head_sets(seed_dir: Path) -> dict[str, torch.Tensor]:
    """Surviving heads (flattened bool) per procedure point of one seed: `no_retrain/<score>/<fraction>` and
    `imp/level_<L>`, from no_retrain/results.json and structured.json."""
    out = {}
    results = _read(seed_dir / "no_retrain" / "results.json")
    for score, points in (results or {}).get("curves", {}).get("heads", {}).items():
        for p in points:
            out[f"no_retrain/{score}/{p['fraction']:g}"] = torch.tensor(p["kept"], dtype=torch.bool).flatten()
    report = _read(seed_dir / "structured.json")
    for row in (report or {}).get("imp", {}).get("trunk", {}).get("levels", [])[1:]:
        out[f"imp/level_{row['level']}"] = torch.tensor(row["heads"], dtype=torch.bool).flatten()
    return out


def head_scores(seed_dir: Path) -> dict[str, torch.Tensor]:
    """score name -> (layers, heads) head importance of the dense network."""
    results = _read(seed_dir / "no_retrain" / "results.json") or {}
    return {
        s: torch.tensor(v["heads"], dtype=torch.float64) for s, v in results.get("scores", {}).items() if "heads" in v
    }


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    if a.numel() < 2 or bool((a == a.flatten()[0]).all()) or bool((b == b.flatten()[0]).all()):
        return float("nan")  # undefined for constant scores
    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


def overlap_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    rows = []
    for e in experiments:
        sets = {s.name: head_sets(s) for s in e.seed_dirs}
        for a, b in itertools.combinations(sorted(sets), 2):
            for point in sorted(set(sets[a]) & set(sets[b])):
                x, y = sets[a][point], sets[b][point]
                rows.append(
                    {
                        "label": e.label,
                        "seed_a": a,
                        "seed_b": b,
                        "point": point,
                        "heads_kept": int(x.sum()),
                        "jaccard": jaccard(x, y),
                        "random_jaccard": expected_random_jaccard(x.numel(), int(x.sum()), int(y.sum())),
                    }
                )
    return rows


def spearman_rows(experiments: list[Experiment]) -> list[dict[str, Any]]:
    scores = {(e.label, s.name): head_scores(s) for e in experiments for s in e.seed_dirs}
    rows = []
    for (ka, sa), (kb, sb) in itertools.combinations(sorted(scores), 2):
        if ka != kb and sa != sb:
            continue  # across seeds within an experiment, or across experiments for one seed
        for score in sorted(set(scores[(ka, sa)]) & set(scores[(kb, sb)])):
            x, y = scores[(ka, sa)][score], scores[(kb, sb)][score]
            if x.shape != y.shape:
                continue  # different numbers of layers or heads: no head-to-head correspondence
            rows.append(
                {
                    "across": "seeds" if ka == kb else "experiments",
                    "a": f"{ka} {sa}",
                    "b": f"{kb} {sb}",
                    "score": score,
                    "spearman": spearman(x, y),
                    "layer_spearman": spearman(x.sum(1), y.sum(1)),
                }
            )
    return rows


def overlap_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="surviving heads: Jaccard overlap across seeds (mean over pairs) against random sets")
    for column in ("configuration", "point", "heads kept", "pairs", "jaccard", "random"):
        text = column in ("configuration", "point")
        table.add_column(column, justify="left" if text else "right", overflow="fold" if text else "ellipsis")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["label"], r["point"]), []).append(r)
    for (label, point), rs in groups.items():
        jac, rand = (statistics.fmean(r[key] for r in rs) for key in ("jaccard", "random_jaccard"))
        kept = statistics.fmean(r["heads_kept"] for r in rs)
        table.add_row(label, point, f"{kept:g}", str(len(rs)), f"{jac:.3f}", f"{rand:.3f}")
    return table


def structured_report(experiments: list[Experiment], out_dir: Path, console: Console) -> dict[str, list]:
    structured = [e for e in experiments if any((s / "structured.json").is_file() for s in e.seed_dirs)]
    if not structured:
        return {}
    result = {
        "overlap": overlap_rows(structured),
        "spearman": spearman_rows(structured),
        "curves": curve_rows(structured),
    }
    artifacts.write_csv(result["overlap"], out_dir / "head_overlap.csv", lineterminator=CSV_LINE_END)
    artifacts.write_csv(result["spearman"], out_dir / "head_spearman.csv", lineterminator=CSV_LINE_END)
    artifacts.write_csv(result["curves"], out_dir / "heads_removed.csv", lineterminator=CSV_LINE_END)
    plot_heads_removed(result["curves"], out_dir / "heads_removed.png")
    console.print(overlap_table(result["overlap"]))
    table = Table(title="head importance: Spearman rank correlation (mean over pairs)")
    for column in ("across", "score", "pairs", "spearman", "per-layer spearman"):
        table.add_column(column, justify="left" if column in ("across", "score") else "right")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["spearman"]:
        groups.setdefault((r["across"], r["score"]), []).append(r)
    for (across, score), rs in sorted(groups.items()):
        rho, layer_rho = (statistics.fmean(r[key] for r in rs) for key in ("spearman", "layer_spearman"))
        table.add_row(across, score, str(len(rs)), f"{rho:.3f}", f"{layer_rho:.3f}")
    console.print(table)
    return result
