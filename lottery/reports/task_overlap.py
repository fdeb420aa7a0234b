"""`lottery-compare` across tasks: is there a task-agnostic core of important units?

Reads the unit scores of every seed_<s>/no_retrain/results.json found (procedure (a) on a pretrained model, so a
unit is the same unit in every run of one model) and compares every pair of runs whose score grids match, for each
score and each kind of KINDS:

  spearman   rank correlation of the two score grids, flattened
  top-k      Jaccard overlap of the k most important units (highest scores; equal scores keep the earlier unit, as
             pruning does) for k = 10%, 20%, 30% of the units, against `random`, the exact expected Jaccard of two
             independent uniformly random k-subsets (the intersection is hypergeometric)

Runs are labelled by what differs between them: the task, the numbers of shots, the prompt sample (data_seed), the
seed, the model; read from results.json's "data" and "settings" and else the seed's config.yaml. Across all runs of
a score and kind: the mean pairwise Spearman and Jaccard, and the core: the units in the top k of every run, with
the size a core of independent random top-k sets would have on average (n (k/n)^runs). Constant scores (every unit
tied) have no Spearman, top-k Jaccard or core: null in the JSON, "-" in the tables.

Writes task_overlap.json and task_overlap.md (the summary table, also printed) into the report folder, when two or
more runs with scores are found.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from rich.table import Table

from lottery.core import artifacts
from lottery.core.overlap import jaccard
from lottery.reports.heads import spearman

RESULTS = Path("no_retrain") / "results.json"
KINDS = ("heads", "layers", "mlp_blocks")  # mlp_units left out: a 10% core of a 7B model is ~35k indices
FRACTIONS = (0.1, 0.2, 0.3)
LABEL_KEYS = ("task", "shots", "data_seed", "seed", "model")  # what a label names first, when it differs


@dataclass
class ScoredRun:
    path: Path  # the seed folder
    name: str  # <name>/<hash>/seed_<s>, relative to the experiment root
    description: dict[str, Any]  # the settings a label may name: task, shots, data_seed, seed, model, other data keys
    scores: dict[str, dict[str, torch.Tensor]]  # score -> kind -> grid (float64)
    label: str = field(default="")


def _results_files(paths: list[Path]) -> list[Path]:
    """results.json of seed folders at, or one to three levels below, each path (a seed, hash, name or root folder:
    <root>/<name>/<hash>/seed_<s>, as lottery.reports.collect finds hash folders)."""
    found: list[Path] = []
    for p in paths:
        for depth in range(3):
            found += sorted(p.glob("/".join(["*"] * depth + ["seed_*", str(RESULTS)])))
        if (p / RESULTS).is_file():
            found.append(p / RESULTS)
    return sorted(dict.fromkeys(f.resolve() for f in found))


def _describe(results: dict[str, Any], config: dict[str, Any], seed_dir: Path) -> dict[str, Any]:
    """results.json's "data" first (what the run used), then its "settings", then config.yaml's data section."""
    out: dict[str, Any] = dict(config.get("data") or {})
    out.update({k: v for k, v in (results.get("settings") or {}).items() if k in LABEL_KEYS})
    out.update(results.get("data") or {})
    out.setdefault("seed", config.get("seed", seed_dir.name.removeprefix("seed_")))
    model = config.get("model") or {}
    if isinstance(model, dict) and model.get("path"):
        out.setdefault("model", model["path"])
    return {k: v for k, v in out.items() if not isinstance(v, dict)}


def find_runs(paths: list[Path], name: str | None = None) -> list[ScoredRun]:
    """The runs with scores under `paths` (of experiment `name` only, when given), labelled by what differs."""
    runs = []
    for file in _results_files(paths):
        seed_dir = file.parent.parent
        config_file = seed_dir / "config.yaml"
        config = (yaml.safe_load(config_file.read_text()) or {}) if config_file.is_file() else {}
        experiment = config.get("name", seed_dir.parent.parent.name)
        if name is not None and experiment != name:
            continue
        results = artifacts.read_json(file, "no-retrain results")
        scores = {
            s: {k: torch.tensor(v, dtype=torch.float64) for k, v in kinds.items() if k in KINDS}
            for s, kinds in (results.get("scores") or {}).items()
        }
        scores = {s: kinds for s, kinds in scores.items() if kinds}
        if scores:
            rel = f"{seed_dir.parent.parent.name}/{seed_dir.parent.name}/{seed_dir.name}"
            runs.append(ScoredRun(seed_dir, rel, _describe(results, config, seed_dir), scores))
    _label(runs)
    return runs


def _label(runs: list[ScoredRun]) -> list[str]:
    """Label each run by the description keys whose values differ (LABEL_KEYS first); its folder when none do or
    two runs would read alike."""
    keys = {k for r in runs for k in r.description}
    varying = [k for k in keys if len({json.dumps(r.description.get(k), sort_keys=True) for r in runs}) > 1]
    varying.sort(key=lambda k: (LABEL_KEYS.index(k) if k in LABEL_KEYS else len(LABEL_KEYS), k))
    for r in runs:
        r.label = ", ".join(f"{k}={_text(r.description.get(k))}" for k in varying) or r.name
    seen = [r.label for r in runs]
    for r in runs:
        if seen.count(r.label) > 1:
            r.label = f"{r.label} ({r.name})" if r.label != r.name else r.name
    return varying


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def top_count(n: int, fraction: float) -> int:
    """k = fraction x n rounded half up, at least one unit."""
    return min(n, max(1, math.floor(fraction * n + 0.5)))


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k highest scores as a flat bool mask; equal scores keep the earlier unit (a stable sort, as keep_top)."""
    flat = scores.flatten()
    order = torch.sort(flat, descending=True, stable=True).indices
    kept = torch.zeros(flat.numel(), dtype=torch.bool)
    kept[order[:k]] = True
    return kept


def expected_random_jaccard(n: int, k_a: int, k_b: int) -> float:
    """E[|A and B| / |A or B|] for independent uniformly random subsets A, B of n units of sizes k_a, k_b, exactly:
    |A and B| = i is hypergeometric, P(i) = C(k_a, i) C(n - k_a, k_b - i) / C(n, k_b), and |A or B| = k_a + k_b - i.
    (lottery.core.overlap's version is the ratio of the expectations, close for large n but not exact.)"""
    if k_a + k_b == 0:
        return 1.0  # two empty sets agree on everything, as `jaccard` says
    lo, hi = max(0, k_a + k_b - n), min(k_a, k_b)
    log_total = _log_comb(n, k_b)
    return sum(
        math.exp(_log_comb(k_a, i) + _log_comb(n - k_a, k_b - i) - log_total) * i / (k_a + k_b - i)
        for i in range(lo, hi + 1)
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _constant(scores: torch.Tensor) -> bool:
    """All units tie: the top k is then the first k by index, which says nothing about importance."""
    return bool((scores == scores.flatten()[0]).all())


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x  # strict JSON has no NaN (Spearman of constant scores)


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return statistics.fmean(finite) if finite else None


def _coordinates(index: int, shape: tuple[int, ...]) -> int | list[int]:
    """A flat unit index as its grid coordinates ([layer, head]), or the index itself for one-dimensional grids."""
    if len(shape) == 1:
        return index
    coords = []
    for size in reversed(shape):
        coords.append(index % size)
        index //= size
    return coords[::-1]


def pair_rows(runs: list[ScoredRun], fractions: tuple[float, ...] = FRACTIONS) -> list[dict[str, Any]]:
    """Every pair of runs, score and kind they share with the same grid shape."""
    rows = []
    for a, b in itertools.combinations(runs, 2):
        for score in sorted(set(a.scores) & set(b.scores)):
            for kind in [k for k in KINDS if k in a.scores[score] and k in b.scores[score]]:
                x, y = a.scores[score][kind], b.scores[score][kind]
                if x.shape != y.shape:
                    continue  # different models: no unit-to-unit correspondence
                n, tied = x.numel(), _constant(x) or _constant(y)
                top = []
                for f in fractions:
                    k = top_count(n, f)
                    top.append(
                        {
                            "fraction": f,
                            "k": k,
                            "jaccard": None if tied else jaccard(top_k(x, k), top_k(y, k)),
                            "random": expected_random_jaccard(n, k, k),
                        }
                    )
                rows.append(
                    {
                        "a": a.label,
                        "b": b.label,
                        "score": score,
                        "kind": kind,
                        "units": n,
                        "spearman": _finite(spearman(x, y)),
                        "top": top,
                    }
                )
    return rows


def summary_rows(
    runs: list[ScoredRun], pairs: list[dict[str, Any]], fractions: tuple[float, ...] = FRACTIONS
) -> list[dict[str, Any]]:
    """Per score, kind and grid shape: mean pairwise Spearman and top-k Jaccard, and the core of every run's top k."""
    groups: dict[tuple[str, str, tuple[int, ...]], list[ScoredRun]] = {}
    for r in runs:
        for score, kinds in r.scores.items():
            for kind, grid in kinds.items():
                groups.setdefault((score, kind, tuple(grid.shape)), []).append(r)
    rows = []
    for (score, kind, shape), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        labels = {r.label for r in members}
        mine = [p for p in pairs if p["score"] == score and p["kind"] == kind and {p["a"], p["b"]} <= labels]
        n = math.prod(shape)
        tied = any(_constant(r.scores[score][kind]) for r in members)
        top = []
        for i, f in enumerate(fractions):
            k = top_count(n, f)
            every = torch.stack([top_k(r.scores[score][kind], k) for r in members]).all(0)
            core = None if tied else [_coordinates(int(j), shape) for j in every.nonzero().flatten()]
            top.append(
                {
                    "fraction": f,
                    "k": k,
                    "mean_jaccard": _mean([p["top"][i]["jaccard"] for p in mine]),
                    "random": expected_random_jaccard(n, k, k),
                    "core": core,
                    "core_size": None if core is None else len(core),
                    "random_core_size": n * (k / n) ** len(members),
                }
            )
        rows.append(
            {
                "score": score,
                "kind": kind,
                "shape": list(shape),
                "runs": len(members),
                "pairs": len(mine),
                "mean_spearman": _mean([p["spearman"] for p in mine]),
                "top": top,
            }
        )
    return rows


def _number(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _count(x: int | None) -> str:
    return "-" if x is None else str(x)


def _table_lines(summary: list[dict[str, Any]], fractions: tuple[float, ...]) -> tuple[list[str], list[list[str]]]:
    columns = ["score", "kind", "units", "runs", "spearman"]
    columns += [f"J top {f:.0%} (random)" for f in fractions] + [f"core {f:.0%} (random)" for f in fractions]
    body = []
    for s in summary:
        cells = [s["score"], s["kind"], str(math.prod(s["shape"])), str(s["runs"]), _number(s["mean_spearman"])]
        cells += [f"{_number(t['mean_jaccard'])} ({_number(t['random'])})" for t in s["top"]]
        cells += [f"{_count(t['core_size'])}/{t['k']} ({t['random_core_size']:.2g})" for t in s["top"]]
        body.append(cells)
    return columns, body


def markdown(result: dict[str, Any]) -> str:
    columns, body = _table_lines(result["summary"], tuple(result["fractions"]))
    lines = [
        "# Cross-task overlap of unit scores",
        "",
        "Runs: " + "; ".join(f"`{r['label']}`" for r in result["runs"]),
        "",
        "Mean over pairs of runs. J: top-k Jaccard (random: two random k-subsets). "
        "Core: units in the top k of every run, of k (random: expected core of independent random top-k sets).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def task_overlap_report(
    runs: list[ScoredRun], out_dir: Path, console: Console, fractions: tuple[float, ...] = FRACTIONS
) -> dict[str, Any] | None:
    """Write task_overlap.json and task_overlap.md and print the summary; nothing (None) below two runs."""
    if len(runs) < 2:
        return None
    varying = _label(runs)
    pairs = pair_rows(runs, fractions)
    result = {
        "varying": varying,
        "fractions": list(fractions),
        "runs": [{"label": r.label, "path": r.name, **{k: r.description.get(k) for k in varying}} for r in runs],
        "pairs": pairs,
        "summary": summary_rows(runs, pairs, fractions),
    }
    artifacts.write_json(result, out_dir / "task_overlap.json")
    artifacts.write_text(markdown(result), out_dir / "task_overlap.md")
    columns, body = _table_lines(result["summary"], fractions)
    table = Table(title="unit scores across runs (" + ", ".join(varying or ["folders"]) + "): mean over pairs")
    for c in columns:
        table.add_column(c, justify="left" if c in ("score", "kind") else "right")
    for cells in body:
        table.add_row(*cells)
    console.print(table)
    return result
