"""`lottery-compare`: tickets across seeds and sweeps, read from the outputs without re-running anything.

    lottery-compare                                   # every experiment under outputs/
    lottery-compare outputs/default                   # one experiment name (a sweep)
    lottery-compare outputs/default/<hash> ...        # chosen experiments
    lottery-compare --metric best_val_acc --out report/ --wandb offline

Writes, under a report folder it prints (default <first path>/report):
  accuracy_vs_density.csv/.png  mean, standard deviation and count over seeds at each density, for the ticket and
                                each control branch, one line per configuration (labelled by the settings that differ)
  mask_overlap.csv/.png         per pair of seeds, level and layer: Jaccard overlap of the kept weights, the overlap
                                two random masks of the same densities would have, and the sign agreement of the
                                weights both keep at the rewind point; the figure is a level x layer heatmap
  instability_vs_rewind.csv/.png  runs with branch=instability: error barrier and ticket accuracy against the rewind
                                step k of a rewind.step sweep, and the earliest stable k (lottery/reports/stability.py)
  head_overlap.csv, head_spearman.csv, heads_removed.csv/.png
                                structured runs only: surviving-head overlap across seeds, rank correlation of head
                                importance across seeds and experiments, accuracy against heads removed
                                (lottery/reports/heads.py)
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
# (marker, line style) per line: the ticket solid, each control its own dash pattern in the configuration's colour.
LINE_STYLES = {
    "ticket": ("o", "-"),
    "random_prune": ("x", "--"),
    "random_reinit": ("^", ":"),
    "oneshot": ("s", "-."),
    "early_bird": ("D", (0, (5, 1))),
}
SPARE_STYLES = [("v", (0, (1, 1))), ("P", (0, (8, 2))), ("*", (0, (3, 1, 1, 1, 1, 1))), ("h", (0, (2, 3)))]
HASHED_SECTIONS = ("model", "data", "optim", "schedule", "pruning", "rewind", "train")


@dataclass
class Experiment:
    path: Path
    settings: dict[str, Any]  # flattened resolved config of the result-affecting sections
    # line ("ticket" or a branch) -> level -> one metrics record per seed
    lines: dict[str, dict[int, list[dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    label: str = ""

    @property
    def seed_dirs(self) -> list[Path]:
        return sorted(self.path.glob("seed_*"))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(node) if isinstance(node, (list, dict)) else node}


def find_experiments(paths: list[Path]) -> list[Path]:
    """Hash folders (holding hash.json) at, or up to two levels below, each path."""
    found: list[Path] = []
    for p in paths:
        for pattern in ("hash.json", "*/hash.json", "*/*/hash.json"):
            found += [h.parent for h in sorted(p.glob(pattern))]
    return sorted(dict.fromkeys(f.resolve() for f in found))


def collect(paths: list[Path] | Path, name: str | None = None) -> list[Experiment]:
    paths = [paths] if isinstance(paths, Path) else paths
    experiments = []
    for exp_dir in find_experiments(paths):
        configs = [s / "config.yaml" for s in sorted(exp_dir.glob("seed_*")) if (s / "config.yaml").is_file()]
        if not configs:
            continue
        config = yaml.safe_load(configs[0].read_text())
        if name is not None and config.get("name") != name:
            continue
        settings = {k: v for k, v in _flatten(config).items() if k.split(".")[0] in HASHED_SECTIONS}
        settings["name"] = config.get("name")
        exp = Experiment(path=exp_dir, settings=settings)
        for seed_dir in exp.seed_dirs:
            sources = [("ticket", seed_dir)] + [
                (b.name.removeprefix("branch_"), b) for b in sorted(seed_dir.glob("branch_*")) if b.is_dir()
            ]
            for line, folder in sources:
                for metrics_file in folder.glob("level_*/metrics.json"):
                    metrics = json.loads(metrics_file.read_text())
                    exp.lines[line][int(metrics["level"])].append(metrics)
        if exp.lines:
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


def summarize(exp: Experiment, metric: str, line: str = "ticket") -> list[dict[str, Any]]:
    rows = []
    for level in sorted(exp.lines.get(line, {})):
        records = exp.lines[line][level]
        values = [m[metric] for m in records]
        rows.append(
            {
                "label": exp.label,
                "line": line,
                "hash": exp.path.name,
                "level": level,
                "density": statistics.fmean(m["density"] for m in records),
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": len(values),
            }
        )
    return rows


def plot(summaries: dict[str, list[dict[str, Any]]], metric: str, out: Path) -> None:
    """One line per key of `summaries` (rows of density/mean/std/seeds); controls (keys ending in a branch name after
    ' · ') are drawn dashed in the colour of their configuration."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours: dict[str, Any] = {}
    used: dict[str, set] = {}
    for label, rows in summaries.items():
        if not rows:
            continue
        config, _, line = label.partition(" · ")
        colour = colours.setdefault(config, f"C{len(colours) % 10}")
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
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def line_style(line: str) -> tuple[str, Any]:
    """(marker, line style) of a line; early_bird_<settings> lines are drawn like early_bird."""
    return next((style for name, style in LINE_STYLES.items() if line.startswith(name)), ("o", "-"))


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def accuracy_report(experiments: list[Experiment], metric: str, out_dir: Path, console: Console) -> list[dict]:
    lines: dict[str, list[dict[str, Any]]] = {}
    for e in experiments:
        for line in sorted(e.lines, key=lambda name: (name != "ticket", name)):
            lines[f"{e.label} · {line}"] = summarize(e, metric, line)
    rows = [r for rs in lines.values() for r in rs]
    _write_csv(rows, out_dir / "accuracy_vs_density.csv")
    plot(lines, metric, out_dir / "accuracy_vs_density.png")
    table = Table(title=f"{metric} by density, mean ± sd over seeds")
    for column in ("configuration", "line", "level", "density", metric, "seeds"):
        table.add_column(column, justify="left" if column in ("configuration", "line") else "right")
    previous = None
    for r in rows:
        spread = f" ± {100 * r['std']:.2f}" if r["seeds"] > 1 else ""
        label, previous = (r["label"] if r["label"] != previous else ""), r["label"]
        table.add_row(
            label, r["line"], str(r["level"]), f"{r['density']:.2%}", f"{100 * r['mean']:.2f}{spread}", str(r["seeds"])
        )
    console.print(table)
    return rows


def main(argv: list[str] | None = None) -> int:
    from lottery.reports.overlap import overlap_report
    from lottery.reports.stability import instability_report

    parser = argparse.ArgumentParser(prog="lottery-compare", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["outputs"], help="output root, experiment name or hash folders")
    parser.add_argument("--name", help="only experiments of this name")
    parser.add_argument("--metric", choices=METRICS, default="test_acc")
    parser.add_argument("--out", help="report folder (default: <first path>/report)")
    parser.add_argument(
        "--wandb",
        choices=("disabled", "offline", "online"),
        default="disabled",
        help="also log the report as one W&B run of job type `compare`",
    )
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.paths]
    experiments = collect(paths, args.name)
    if not experiments:
        print(f"lottery-compare: error: no finished levels under {', '.join(map(str, paths))}")
        return 2
    out_dir = Path(args.out) if args.out else paths[0] / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console()
    rows = accuracy_report(experiments, args.metric, out_dir, console)
    overlaps = overlap_report(experiments, out_dir, console)
    stability = instability_report(experiments, out_dir, console)
    from lottery.reports.heads import structured_report  # head overlap and score correlations, if any

    structured_report(experiments, out_dir, console)
    if args.wandb != "disabled":
        log_to_wandb(out_dir, rows, overlaps, args.wandb, stability)
    console.print(f"report: {out_dir}")
    return 0


def log_to_wandb(
    out_dir: Path, rows: list[dict], overlaps: list[dict], mode: str, stability: list[dict] | None = None
) -> None:
    import wandb

    run = wandb.init(
        project="lottery", job_type="compare", dir=str(out_dir), mode=mode, config={"report": str(out_dir)}
    )
    try:
        log: dict[str, Any] = {"compare/accuracy_vs_density": wandb.Image(str(out_dir / "accuracy_vs_density.png"))}
        if rows:
            log["compare/accuracy"] = wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])
        if overlaps:
            log["compare/mask_overlap"] = wandb.Table(
                columns=list(overlaps[0]), data=[list(r.values()) for r in overlaps]
            )
            log["compare/mask_overlap_heatmap"] = wandb.Image(str(out_dir / "mask_overlap.png"))
        if stability:
            log["compare/instability"] = wandb.Table(
                columns=list(stability[0]), data=[list(r.values()) for r in stability]
            )
            log["compare/instability_vs_rewind"] = wandb.Image(str(out_dir / "instability_vs_rewind.png"))
        run.log(log)
    finally:
        run.finish()


if __name__ == "__main__":
    raise SystemExit(main())
