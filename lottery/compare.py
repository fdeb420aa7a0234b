"""`lottery-compare`: accuracy against density for every experiment under an output root, one line per configuration.

    lottery-compare                          # every experiment under outputs/
    lottery-compare outputs --name default   # one experiment name
    lottery-compare --metric best_val_acc --out sweep.png

Experiments are the hash folders; seeds of one configuration are averaged (mean, with the standard deviation as error
bars and the number of seeds in the table). Lines are labelled by the settings that differ between the experiments
shown (e.g. `pruning.schedule`, `model.width`), read from each run's resolved config.yaml.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

METRICS = ("test_acc", "best_val_acc", "final_val_acc")


@dataclass
class Experiment:
    path: Path
    settings: dict[str, Any]  # flattened resolved config of the result-affecting sections
    levels: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))  # level -> per seed
    label: str = ""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(node) if isinstance(node, (list, dict)) else node}


HASHED_SECTIONS = ("model", "data", "optim", "schedule", "pruning", "rewind", "train")


def collect(root: Path, name: str | None = None) -> list[Experiment]:
    experiments = []
    for hash_file in sorted(root.glob(f"{name or '*'}/*/hash.json")):
        exp_dir = hash_file.parent
        seed_dirs = sorted(exp_dir.glob("seed_*"))
        configs = [s / "config.yaml" for s in seed_dirs if (s / "config.yaml").is_file()]
        if not configs:
            continue
        config = yaml.safe_load(configs[0].read_text())
        settings = {k: v for k, v in _flatten(config).items() if k.split(".")[0] in HASHED_SECTIONS}
        settings["name"] = config.get("name")
        exp = Experiment(path=exp_dir, settings=settings)
        for seed_dir in seed_dirs:
            for metrics_file in seed_dir.glob("level_*/metrics.json"):
                metrics = json.loads(metrics_file.read_text())
                exp.levels[int(metrics["level"])].append(metrics)
        if exp.levels:
            experiments.append(exp)
    varying = sorted(
        k
        for k in {k for e in experiments for k in e.settings}
        if len({json.dumps(e.settings.get(k)) for e in experiments}) > 1 and not k.startswith("model._target_")
    )
    for e in experiments:
        # Unset options (None, empty lists) are implied by the ones that are set, e.g. pruning.schedule=fraction.
        parts = [f"{k}={e.settings.get(k)}" for k in varying if e.settings.get(k) not in (None, "[]", "{}")]
        e.label = ", ".join(parts) or f"{e.path.parent.name}/{e.path.name}"
    return experiments


def summarize(exp: Experiment, metric: str) -> list[dict[str, Any]]:
    rows = []
    for level in sorted(exp.levels):
        values = [m[metric] for m in exp.levels[level]]
        rows.append(
            {
                "label": exp.label,
                "hash": exp.path.name,
                "level": level,
                "density": exp.levels[level][0]["density"],
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values),
            }
        )
    return rows


def plot(summaries: dict[str, list[dict[str, Any]]], metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows in summaries.items():
        ax.errorbar(
            [100 * r["density"] for r in rows],
            [100 * r["mean"] for r in rows],
            yerr=[100 * r["std"] for r in rows],
            marker="o",
            markersize=3,
            capsize=2,
            label=f"{label} (n={max(r['seeds'] for r in rows)})",
        )
    ax.set_xscale("log")
    densities = [100 * r["density"] for rows in summaries.values() for r in rows]
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if min(densities) * 0.8 <= t <= 100]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()  # sparser to the right, as in the lottery-ticket papers
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lottery-compare", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="outputs", help="output root (default: outputs)")
    parser.add_argument("--name", help="only this experiment name")
    parser.add_argument("--metric", choices=METRICS, default="test_acc")
    parser.add_argument("--out", help="figure path (default: <root>/compare.png); a .csv is written beside it")
    args = parser.parse_args(argv)
    root = Path(args.root)
    experiments = collect(root, args.name)
    if not experiments:
        print(f"lottery-compare: error: no finished levels under {root}" + (f"/{args.name}" if args.name else ""))
        return 2
    summaries = {e.label: summarize(e, args.metric) for e in experiments}
    out = Path(args.out) if args.out else root / "compare.png"
    plot(summaries, args.metric, out)
    rows = [r for rs in summaries.values() for r in rs]
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = Table(title=f"{args.metric} by density ({out})")
    for column in ("configuration", "level", "density", args.metric, "seeds"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    previous = None
    for r in rows:
        spread = f" ± {100 * r['std']:.2f}" if r["seeds"] > 1 else ""
        label, previous = (r["label"] if r["label"] != previous else ""), r["label"]
        table.add_row(label, str(r["level"]), f"{r['density']:.2%}", f"{100 * r['mean']:.2f}{spread}", str(r["seeds"]))
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
