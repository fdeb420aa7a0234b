"""The tables of the pretrained-LM study (experiments/README.md) from its results files, across tasks, splits of the
held-out queries (data.data_seed) and model families:

    python experiments/llm_table.py outputs/smollm2_icl outputs/gemma3_icl [--save experiments/results/llm]

Reads every seed_0/no_retrain/results.json below the given folders. Prints, as markdown:
  1. per model, task and split: dense accuracy with its 95% interval over held-out queries, the fraction of each kind
     removable by each score (claimed at 95% confidence; the point-estimate walk in parentheses where it differs),
     heads then FFN blocks, the layers removable alone, dead FFN units, wall time;
  2. per model and task, mean and spread across splits (when there are several);
  3. which depths matter: per model, the layers whose removal alone costs more than half the dense accuracy, at their
     relative depth, and the Spearman correlation of the per-depth accuracy drop across tasks and across families.
With --save, writes a trimmed copy of each results.json (the per-prompt `hits` of dense and of every curve point
kept, so their intervals can be recomputed; the surviving-unit lists left out) and summary.json with the split and
depth summaries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lottery.core.intervals import mean_and_spread  # noqa: E402
from lottery.reports.heads import spearman  # noqa: E402

KINDS = {
    "heads": ("gradient", "token_gradient", "random"),
    "mlp_blocks": ("gradient", "single", "random"),
    "layers": ("angular", "single", "gradient", "random"),
}
DEPTH_BINS = 6  # relative depth bins shared by models with different numbers of layers


def model_name(r: dict) -> str:
    m = r["model"]
    return m.get("fetched") or Path(str(m.get("path", "?"))).name


def load(roots: list[str]) -> list[dict]:
    runs = []
    for root in roots:
        for path in sorted(Path(root).glob("**/seed_0/no_retrain/results.json")):
            r = json.loads(path.read_text())
            if "acc_ci" not in r["dense"]:
                print(f"skipped {path}: written before intervals (run it again)", file=sys.stderr)
                continue
            r["_path"] = str(path)
            if "run" not in r and path.with_name("run.json").is_file():  # how it ran: beside results.json
                r["run"] = json.loads(path.with_name("run.json").read_text())
            runs.append(r)
    return runs


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def claimed(r: dict, kind: str, score: str) -> str:
    if kind not in r["removable"] or score not in r["removable"][kind]:
        return ""
    ci, point = r["removable"][kind][score], r.get("removable_point", {}).get(kind, {}).get(score)
    return pct(ci) + (f" ({pct(point)})" if point is not None and point != ci else "")


def layers_alone(r: dict) -> str:
    """Layers whose removal alone keeps the drop from dense within tolerance at the stated confidence."""
    rows = r.get("layer_removal", [])
    if not r["meaningful"] or not rows:
        return "-"
    return f"{sum(row['drop_bound'] <= r['tolerance'] + 1e-12 for row in rows)}/{len(rows)}"


def key(r: dict) -> tuple[str, str, int]:
    return model_name(r), r["data"]["task"], int(r["data"]["data_seed"])


def run_rows(runs: list[dict]) -> list[str]:
    columns = [(k, s) for k, scores in KINDS.items() for s in scores]
    header = ["model", "task", "split", "dense % [95% CI]", *(f"{k} {s}" for k, s in columns)]
    header += ["heads, then FFN blocks", "layers alone", "dead FFN units", "min"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(runs, key=key):
        d = r["dense"]
        combined = r.get("combined", {})
        step = "-"
        if "curve" in combined:
            step = f"{pct(combined['heads_fraction'])} + {pct(combined['removable_fraction'])}"
        census = r["census"]
        cells = [
            model_name(r), r["data"]["task"], str(r["data"]["data_seed"]),
            f"{100 * d['acc']:.1f} [{100 * d['acc_ci'][0]:.0f}, {100 * d['acc_ci'][1]:.0f}]",
            *(claimed(r, k, s) for k, s in columns), step, layers_alone(r),
            f"{census['dead_total']}/{census['units_total']}", f"{r['run']['seconds'] / 60:.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def split_summary(runs: list[dict]) -> dict:
    """Per model and task: mean and spread across splits of dense accuracy and of every claimed fraction."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault(key(r)[:2], []).append(r)
    out = {}
    for (model, task), rs in sorted(groups.items()):
        entry = {"splits": sorted(int(r["data"]["data_seed"]) for r in rs)}
        entry["dense_acc"] = mean_and_spread([r["dense"]["acc"] for r in rs])
        for kind, scores in KINDS.items():
            for score in scores:
                values = [r["removable"].get(kind, {}).get(score) for r in rs]
                if all(v is not None for v in values) and values:
                    entry[f"{kind}/{score}"] = mean_and_spread(values)
        out[f"{model}/{task}"] = entry
    return out


def split_rows(summary: dict) -> list[str]:
    shown = [
        "dense_acc",
        "heads/gradient",
        "heads/token_gradient",
        "heads/random",
        "mlp_blocks/single",
        "layers/single",
    ]
    lines = ["| model/task | splits | " + " | ".join(shown) + " |", "|" + "---|" * (len(shown) + 2)]
    for name, entry in summary.items():
        if len(entry["splits"]) < 2:
            continue
        cells = [name, ",".join(map(str, entry["splits"]))]
        for col in shown:
            s = entry.get(col)
            cells.append(
                ""
                if s is None
                else f"{100 * s['mean']:.0f} ± {100 * s['sd']:.0f} ({100 * s['min']:.0f}-{100 * s['max']:.0f})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def depth_profile(r: dict) -> list[float]:
    """Mean accuracy drop (dense - alone) of the layers in each of DEPTH_BINS relative-depth bins."""
    rows, dense = r["layer_removal"], r["dense"]["acc"]
    n = len(rows)
    bins: list[list[float]] = [[] for _ in range(DEPTH_BINS)]
    for row in rows:
        bins[min(int(row["layer"] / n * DEPTH_BINS), DEPTH_BINS - 1)].append(dense - row["acc"])
    return [statistics.fmean(b) if b else 0.0 for b in bins]


def first_split(runs: list[dict], model: str) -> int:
    """The split the depth summaries read: data.data_seed's default (1234) where the model has it, else its lowest."""
    seeds = {int(r["data"]["data_seed"]) for r in runs if model_name(r) == model}
    return 1234 if 1234 in seeds else min(seeds)


def depth_summary(runs: list[dict]) -> dict:
    by_model: dict[str, list[dict]] = {}
    for r in runs:  # each model's first split
        first = first_split(runs, model_name(r))
        if "layer_removal" in r and int(r["data"]["data_seed"]) == first:
            by_model.setdefault(model_name(r), []).append(r)
    out: dict = {"bins": DEPTH_BINS, "models": {}}
    profiles = {}
    for model, rs in sorted(by_model.items()):
        fatal = {}
        for r in rs:
            n = len(r["layer_removal"])
            fatal[r["data"]["task"]] = [
                {"layer": row["layer"], "relative_depth": round(row["layer"] / (n - 1), 3), "acc": row["acc"]}
                for row in r["layer_removal"]
                if row["acc"] < r["dense"]["acc"] / 2
            ]
        per_task = {r["data"]["task"]: depth_profile(r) for r in rs}
        pairs = [
            spearman_of(per_task[a], per_task[b])
            for i, a in enumerate(sorted(per_task))
            for b in sorted(per_task)[i + 1 :]
        ]
        profiles[model] = [statistics.fmean(p[i] for p in per_task.values()) for i in range(DEPTH_BINS)]
        out["models"][model] = {
            "layers": len(rs[0]["layer_removal"]),
            "fatal_layers": fatal,
            "depth_profile": per_task,
            "mean_profile": profiles[model],
            "cross_task_spearman": statistics.fmean(pairs) if pairs else None,
        }
    names = sorted(profiles)
    if len(names) == 2:
        out["cross_family_spearman"] = spearman_of(profiles[names[0]], profiles[names[1]])
    return out


def spearman_of(a: list[float], b: list[float]) -> float:
    import torch

    return float(spearman(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)))


def depth_rows(depth: dict) -> list[str]:
    lines = []
    for model, m in depth["models"].items():
        fatal = sorted({f["layer"] for rows in m["fatal_layers"].values() for f in rows})
        every = sorted(set.intersection(*({f["layer"] for f in rows} for rows in m["fatal_layers"].values())))
        lines.append(
            f"- {model} ({m['layers']} layers): layers costing over half the dense accuracy alone, on any task: "
            f"{fatal}; on every task: {every}; mean drop by relative depth ({depth['bins']} bins, shallow to deep): "
            f"{', '.join(f'{100 * x:.0f}' for x in m['mean_profile'])} points; cross-task Spearman of the profile "
            f"{'-' if m['cross_task_spearman'] is None else format(m['cross_task_spearman'], '.2f')}"
        )
    if "cross_family_spearman" in depth:
        lines.append(f"- cross-family Spearman of the mean depth profiles: {depth['cross_family_spearman']:.2f}")
    return lines


def depth_figure(runs: list[dict], out: Path) -> None:
    """Per model, accuracy with each layer removed alone (as a share of dense) against relative depth, one line per
    task of the model's first split, with the heads-removed curves beside: what depths matter, in both families."""
    from lottery.reports.plotting import pyplot, save

    plt = pyplot()
    models = sorted({model_name(r) for r in runs})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for model, style in zip(models, ("-", "--"), strict=False):
        first = first_split(runs, model)
        for r in sorted((r for r in runs if model_name(r) == model and int(r["data"]["data_seed"]) == first), key=key):
            dense, task = r["dense"]["acc"], r["data"]["task"]
            rows = r.get("layer_removal", [])
            if rows:
                n = len(rows)
                axes[0].plot([x["layer"] / (n - 1) for x in rows], [x["acc"] / dense for x in rows], style, lw=1,
                             label=f"{model} {task}")  # fmt: skip
            curve = r["curves"].get("heads", {}).get("gradient", [])
            if curve:
                points = [{"fraction": 0.0, **r["dense"]}, *curve]
                low = [100 * (p["acc"] - p["acc_ci"][0]) for p in points]
                high = [100 * (p["acc_ci"][1] - p["acc"]) for p in points]
                axes[1].errorbar(
                    [p["fraction"] for p in points], [100 * p["acc"] for p in points], yerr=[low, high],
                    fmt=style, lw=1, capsize=2, label=f"{model} {task}",
                )  # fmt: skip
    axes[0].set(
        xlabel="relative depth of the layer removed alone", ylabel="accuracy / dense accuracy", ylim=(-0.05, 1.3)
    )
    axes[1].set(xlabel="fraction of heads removed (gradient score)", ylabel="test accuracy % (95% interval, queries)")
    axes[1].legend(fontsize=6, ncol=2)
    save(fig, out)


def trimmed(r: dict) -> dict:
    out = {k: v for k, v in r.items() if not k.startswith("_")}
    for by in out.get("curves", {}).values():
        for points in by.values():
            for p in points:
                p.pop("kept", None)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--save", type=Path, default=None, help="folder for trimmed results and summary.json")
    parser.add_argument("--figure", type=Path, default=None, help="the depth and heads figure (PNG)")
    parser.add_argument("--split", type=int, default=None, help="the first table shows this data.data_seed only")
    args = parser.parse_args(argv)
    runs = load(args.roots)
    if not runs:
        raise SystemExit(f"no seed_0/no_retrain/results.json below {args.roots}")
    splits, depth = split_summary(runs), depth_summary(runs)
    shown = [r for r in runs if args.split is None or int(r["data"]["data_seed"]) == args.split]
    print("\n".join(run_rows(shown)), "", "\n".join(split_rows(splits)), "", "\n".join(depth_rows(depth)), sep="\n")
    if args.figure is not None:
        depth_figure(runs, args.figure)
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
        for r in runs:
            model, task, seed = key(r)
            (args.save / f"{model}_{task}_s{seed}.json").write_text(json.dumps(trimmed(r)) + "\n")
        summary = {"runs": [dict(zip(("model", "task", "split"), key(r), strict=True)) for r in runs]}
        summary |= {"splits": splits, "depth": depth}
        (args.save / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
