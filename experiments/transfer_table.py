"""What else breaks (experiments/README.md, "Pruned for one task, measured on all"): the transfer matrices of the
pretrained-LM study from its transfer.json files.

    python experiments/transfer_table.py outputs/smollm2_icl outputs/gemma3_icl [--fraction 0.25] \\
        [--save experiments/results/llm/transfer] [--figure experiments/figures/llm_transfer.png]

Reads every seed_0/no_retrain/transfer.json below the given folders (one per source task; studies of one split,
data.data_seed=1234, unless --split says another) and the results.json beside it. Prints, as markdown, per model:
  1. per kind and score, per source task: the fraction claimed removable for the source itself, for every other task,
     and for all of them together (each at 95% confidence over its own held-out queries), and the King James text's
     perplexity at the source's claim beside random removal of as many units;
  2. the matrix at --fraction: rows pruned for, columns measured on, the accuracy drop from dense in points (the
     diagonal is the source's own test split), the score's removal and random removal (mean of its draws);
  3. the text: perplexity over dense at each fraction, mean and range over source tasks, score and random.
With --save, copies each transfer.json (named <model>_<task>.json) and writes summary.json with the matrices.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SCORES = {"heads": "token_gradient", "mlp_blocks": "single", "layers": "angular"}  # the published ranking per kind
TASKS = ("antonyms", "capitals", "capitalise", "number_words", "next_item", "plural")


def load(roots: list[str], split: int) -> dict[str, dict[str, dict]]:
    """{model: {source task: {"transfer": ..., "results": ...}}}."""
    out: dict[str, dict[str, dict]] = {}
    for root in roots:
        for path in sorted(Path(root).glob("**/seed_0/no_retrain/transfer.json")):
            results = json.loads(path.with_name("results.json").read_text())
            if results["data"].get("data_seed", 1234) != split:
                continue
            transfer = json.loads(path.read_text())
            for t in transfer["targets"]:  # early files named a text by its whole path
                if t["kind"] == "text" and "/" in t["name"]:
                    rename(transfer, t["name"], "lm:" + Path(t["name"][3:]).stem)
                    t["name"] = "lm:" + Path(t["name"][3:]).stem
            model = results["model"].get("fetched") or Path(results["model"]["path"]).name
            out.setdefault(model, {})[transfer["source"]] = {"transfer": transfer, "results": results, "path": path}
    return out


def rename(transfer: dict, old: str, new: str) -> None:
    transfer["dense"][new] = transfer["dense"].pop(old)
    for by in transfer["curves"].values():
        for points in by.values():
            for p in points:
                p["on"][new] = p["on"].pop(old)
    for by in transfer["removable"].values():
        for claim in by.values():
            if old in claim.get("text_at_own", {}):
                claim["text_at_own"][new] = claim["text_at_own"].pop(old)


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def text_name(transfer: dict) -> str | None:
    return next((t["name"] for t in transfer["targets"] if t["kind"] == "text"), None)


def claims_rows(studies: dict[str, dict]) -> list[str]:
    rows = []
    for kind, score in SCORES.items():
        rows += [
            f"\n{kind} by {score} (random beside it): removable for the source | for each other task | for all",
            "",
            "| pruned for | own | " + " | ".join(TASKS) + " | all | KJV perplexity at own: score / random |",
            "|---|---|" + "---|" * len(TASKS) + "---|---|",
        ]
        for source in TASKS:
            if source not in studies:
                continue
            t = studies[source]["transfer"]
            if kind not in t["removable"]:
                continue
            claim = t["removable"][kind][score]
            rand = t["removable"][kind]["random"]
            cells = [pct(claim["own"]) + f" ({pct(rand['own'])})"]
            for task in TASKS:
                cells.append("=" if task == source else pct(claim["tasks"].get(task)))
            cells.append(pct(claim["all"]))
            text = text_name(t)
            if text:
                at = claim["text_at_own"][text]
                ratio = at["perplexity"] / at["dense_perplexity"]
                rand_ratio = (
                    "-"
                    if at["random_perplexity"] is None
                    else f"{at['random_perplexity'] / at['dense_perplexity']:.2f}x"
                )
                cells.append(f"{ratio:.2f}x / {rand_ratio} at {pct(at['fraction'])}")
            else:
                cells.append("-")
            rows.append(f"| {source} | " + " | ".join(cells) + " |")
    return rows


def matrix(studies: dict[str, dict], kind: str, score: str, fraction: float) -> dict:
    """{source: {target: drop in points}} of the score's removal and of random, at `fraction`."""
    out: dict[str, dict] = {"score": {}, "random": {}}
    for source, s in studies.items():
        t, r = s["transfer"], s["results"]
        for which, sc in (("score", score), ("random", "random")):
            points = t["curves"].get(kind, {}).get(sc)
            if not points:
                continue
            point = next(p for p in points if abs(p["fraction"] - fraction) < 1e-9)
            own = next(p for p in r["curves"][kind][sc] if abs(p["fraction"] - fraction) < 1e-9)
            row = {source: 100 * (r["dense"]["acc"] - own["acc"])}
            for target, on in point["on"].items():
                if not target.startswith("lm:"):
                    row[target] = 100 * (t["dense"][target]["acc"] - on["acc"])
            out[which][source] = row
    return out


def matrix_rows(m: dict, kind: str, score: str, fraction: float) -> list[str]:
    rows = [
        f"\n{kind} by {score} at {fraction:.0%} removed: accuracy drop from dense in points, score / random "
        "(rows: pruned for; columns: measured on; the diagonal is the source's own test split)",
        "",
        "| pruned for | " + " | ".join(TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for source in TASKS:
        if source not in m["score"]:
            continue
        cells = []
        for target in TASKS:
            a, b = m["score"][source].get(target), m["random"].get(source, {}).get(target)
            cell = "-" if a is None else f"{a:+.0f}"
            cells.append(f"**{cell}**" if target == source else f"{cell} / {'-' if b is None else f'{b:+.0f}'}")
        rows.append(f"| {source} | " + " | ".join(cells) + " |")
    return rows


def text_curve(studies: dict[str, dict]) -> dict:
    """{kind: {score|random: [(fraction, mean, min, max) of perplexity / dense over sources]}}."""
    out: dict[str, dict] = {}
    for kind, score in SCORES.items():
        out[kind] = {}
        for sc in (score, "random"):
            by_fraction: dict[float, list[float]] = {}
            for s in studies.values():
                t = s["transfer"]
                text = text_name(t)
                if not text or kind not in t["curves"] or sc not in t["curves"][kind]:
                    continue
                for p in t["curves"][kind][sc]:
                    ratio = p["on"][text]["perplexity"] / t["dense"][text]["perplexity"]
                    by_fraction.setdefault(p["fraction"], []).append(ratio)
            out[kind][sc] = [(f, statistics.fmean(v), min(v), max(v), len(v)) for f, v in sorted(by_fraction.items())]
    return out


def text_rows(curve: dict) -> list[str]:
    rows = ["\nKing James text: perplexity over dense, mean [min, max] over source tasks, score vs random", ""]
    rows += ["| kind | score | " + " | ".join(f"{f:.0%}" for f, *_ in next(iter(curve.values()))["random"]) + " |"]
    rows += ["|---|---|" + "---|" * len(next(iter(curve.values()))["random"])]
    for kind, by in curve.items():
        for sc, points in by.items():
            cells = [f"{m:.2f}x [{lo:.2f}, {hi:.2f}]" for _, m, lo, hi, _ in points]
            rows.append(f"| {kind} | {sc} | " + " | ".join(cells) + " |")
    return rows


def figure(per_model: dict[str, dict], fraction: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(per_model)
    fig, axes = plt.subplots(
        len(models), len(SCORES) + 1, figsize=(5.2 * (len(SCORES) + 1), 4.6 * len(models)), squeeze=False
    )
    for row, model in zip(axes, models, strict=True):
        for ax, (kind, score) in zip(row[: len(SCORES)], SCORES.items(), strict=True):
            m = per_model[model]["matrices"][kind]
            sources = [s for s in TASKS if s in m["score"]]
            grid = [
                [m["score"][s].get(t, float("nan")) - m["random"].get(s, {}).get(t, 0.0) for t in TASKS]
                for s in sources
            ]
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-60, vmax=60)
            for i, s in enumerate(sources):
                for j, t in enumerate(TASKS):
                    v = m["score"][s].get(t)
                    if v is not None:
                        ax.text(
                            j,
                            i,
                            f"{v:.0f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            fontweight="bold" if s == t else "normal",
                        )
            ax.set_xticks(range(len(TASKS)), TASKS, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(len(sources)), sources, fontsize=7)
            ax.set_title(
                f"{model}: {kind} by {score}, {fraction:.0%} removed\n"
                "numbers: accuracy drop (pts); colour: drop minus random's",
                fontsize=8,
            )
            ax.set_xlabel("measured on", fontsize=7)
            ax.set_ylabel("pruned for", fontsize=7)
        fig.colorbar(im, ax=row[len(SCORES) - 1], fraction=0.046)
        ax = row[-1]
        curve, sources = per_model[model]["text"], len(per_model[model]["studies"])
        for i, (kind, score) in enumerate(SCORES.items()):
            for sc, ls in ((score, "-"), ("random", ":")):
                pts = curve[kind].get(sc, [])
                if not pts:
                    continue
                xs = [0.0] + [100 * f for f, *_ in pts]
                ax.plot(
                    xs, [1.0] + [m for _, m, *_ in pts], color=f"C{i}", ls=ls, marker="o", ms=3, label=f"{kind} by {sc}"
                )
                ax.fill_between(
                    xs,
                    [1.0] + [lo for _, _, lo, _, _ in pts],
                    [1.0] + [hi for _, _, _, hi, _ in pts],
                    color=f"C{i}",
                    alpha=0.1,
                )
        ax.set_yscale("log")
        ax.set(
            title=f"{model}: King James text, perplexity / dense\n(mean and range over {sources} source tasks)",
            xlabel="% of units removed",
            ylabel="perplexity / dense",
        )
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--split", type=int, default=1234, help="data.data_seed of the studies read")
    parser.add_argument("--save", help="a folder for the transfer.json copies and summary.json")
    parser.add_argument("--figure", help="the matrices and the text curve as a PNG")
    args = parser.parse_args(argv)
    found = load(args.roots, args.split)
    per_model: dict[str, dict] = {}
    for model, studies in found.items():
        print(f"\n## {model}: {len(studies)} source tasks (split {args.split})")
        print("\n".join(claims_rows(studies)))
        matrices = {kind: matrix(studies, kind, score, args.fraction) for kind, score in SCORES.items()}
        for kind, score in SCORES.items():
            print("\n".join(matrix_rows(matrices[kind], kind, score, args.fraction)))
        curve = text_curve(studies)
        print("\n".join(text_rows(curve)))
        per_model[model] = {"studies": studies, "matrices": matrices, "text": curve}
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        for model, studies in found.items():
            for source, s in studies.items():
                (folder / f"{model}_{source}.json").write_text(json.dumps(s["transfer"], indent=1) + "\n")
        summary = {
            model: {
                "fraction": args.fraction,
                "scores": SCORES,
                "matrices_drop_points": v["matrices"],
                "text_perplexity_ratio": {
                    k: {sc: [list(p) for p in pts] for sc, pts in by.items()} for k, by in v["text"].items()
                },
                "claims": {src: s["transfer"]["removable"] for src, s in v["studies"].items()},
            }
            for model, v in per_model.items()
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"\nwrote {folder}")
    if args.figure:
        figure(per_model, args.fraction, Path(args.figure))
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
