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
                                step k of a rewind.step sweep, and the earliest stable k (reports/stability.py)
  head_overlap.csv, head_spearman.csv, heads_removed.csv/.png
                                structured runs only: surviving-head overlap across seeds, rank correlation of head
                                importance across seeds and experiments, accuracy against heads removed
                                (reports/heads.py)
  task_overlap.json/.md         runs with no_retrain scores (two or more): rank correlation, top-k overlap against
                                random and the common core of unit scores across tasks, shots and prompt samples
                                (reports/task_overlap.py)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lottery.console import console as make_console
from lottery.core import artifacts
from lottery.reports.collect import CSV_LINE_END, Experiment, collect, summarize
from lottery.reports.heads import structured_report
from lottery.reports.overlap import overlap_report
from lottery.reports.plotting import plot
from lottery.reports.stability import instability_report
from lottery.reports.task_overlap import find_runs, task_overlap_report

# test_acc: after the last step; early_stop_test_acc: at the evaluation step of minimum validation loss (LTH's metric)
METRICS = ("test_acc", "early_stop_test_acc", "best_val_acc", "final_val_acc")


def accuracy_report(experiments: list[Experiment], metric: str, out_dir: Path, console: Console) -> list[dict]:
    lines: dict[str, list[dict[str, Any]]] = {}
    for e in experiments:
        for line in sorted(e.lines, key=lambda name: (name != "ticket", name)):
            lines[f"{e.label} · {line}"] = summarize(e, metric, line)
    rows = [r for rs in lines.values() for r in rs]
    artifacts.write_csv(rows, out_dir / "accuracy_vs_density.csv", lineterminator=CSV_LINE_END)
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
    scored = find_runs(paths, args.name)  # no_retrain scores: compared across tasks, shots and prompt samples
    if not experiments and not scored:
        print(f"lottery-compare: error: no finished levels under {', '.join(map(str, paths))}")
        return 2
    out_dir = Path(args.out) if args.out else paths[0] / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    console = make_console()
    if experiments:  # none when a folder holds only no_retrain results (copied off a cluster, say)
        rows = accuracy_report(experiments, args.metric, out_dir, console)
        overlaps = overlap_report(experiments, out_dir, console)
        stability = instability_report(experiments, out_dir, console)
        structured_report(experiments, out_dir, console)
        if args.wandb != "disabled":
            log_to_wandb(out_dir, rows, overlaps, args.wandb, stability)
    task_overlap_report(scored, out_dir, console)  # writes nothing below two runs with scores
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
