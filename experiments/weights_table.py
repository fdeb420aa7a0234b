"""Weights pruned without retraining on the pretrained models (experiments/README.md, "Are models undertrained?"):
perplexity on held-out King James chapters at every density, by magnitude, Wanda and random, and 2:4, from the
studies' results.json files.

    python experiments/weights_table.py outputs/weights_kjv [--save experiments/results/llm/weights] \\
        [--figure experiments/figures/llm_weights.png]

Prints, as markdown, per model: dense perplexity and token accuracy, then per density each score's perplexity with its
95% interval over the held-out windows and its ratio to dense, and the 2:4 points. With --save, copies each
results.json as <family>_<parameters>.json; with --figure, perplexity against density for both models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lottery.core import artifacts


def load(roots: list[str]) -> list[tuple[Path, dict]]:
    out = []
    for root in roots:
        for path in sorted(Path(root).glob("**/seed_0/no_retrain/results.json")):
            results = json.loads(path.read_text())
            if "weights" in results.get("curves", {}):
                out.append((path, results))
    return out


def name(results: dict) -> str:
    m = results["model"]
    return f"{m['family']} ({m['parameters'] / 1e6:.0f}M, {m.get('quantization') or m['dtype']})"


def table(results: dict) -> str:
    w = results["weights"]
    dense = w["dense"]["perplexity"]
    scores = list(results["curves"]["weights"])
    lines = [
        f"**{name(results)}**: {w['weights']:,} weights in {w['matrices']} matrices; dense perplexity {dense:.2f} "
        f"[{w['dense']['perplexity_ci'][0]:.2f}, {w['dense']['perplexity_ci'][1]:.2f}], next-token accuracy "
        f"{w['dense']['acc']:.1%}; Wanda calibrated on {w['calibration_prompts']} windows "
        f"({w['calibration_tokens']:,} tokens)",
        "",
        "| weights removed | " + " | ".join(f"{s}: perplexity (x dense)" for s in scores) + " |",
        "|---|" + "---|" * len(scores),
    ]
    by_fraction = {}
    for s in scores:
        for p in results["curves"]["weights"][s]:
            by_fraction.setdefault(p["fraction"], {})[s] = p
    for fraction, row in sorted(by_fraction.items()):
        cells = [_cell(row[s], dense) for s in scores]
        lines.append(f"| {fraction:.0%} | " + " | ".join(cells) + " |")
    for pattern, row in results.get("weight_patterns", {}).items():
        lines.append(f"| {pattern} | " + " | ".join(_cell(row[s], dense) for s in scores if s in row) + " |")
    return "\n".join(lines)


def _cell(p: dict, dense: float) -> str:
    low, high = p["perplexity_ci"]
    return f"{p['perplexity']:.4g} [{low:.4g}, {high:.4g}] ({p['perplexity'] / dense:.2f}x)"


def figure(studies: list[tuple[Path, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(studies), figsize=(6 * len(studies), 4.2), squeeze=False)
    style = {"magnitude": ("C0", "o"), "wanda": ("C3", "P"), "random": ("0.45", "x")}
    for ax, (_, r) in zip(axes[0], studies, strict=True):
        ax.axhline(r["weights"]["dense"]["perplexity"], color="k", lw=0.8, label="dense")
        for score, curve in r["curves"]["weights"].items():
            colour, marker = style.get(score, ("C5", "."))
            xs = [100 * p["density"] for p in curve]
            ax.plot(xs, [p["perplexity"] for p in curve], color=colour, marker=marker, ms=3, label=score)
            ax.fill_between(xs, *zip(*(p["perplexity_ci"] for p in curve), strict=True), color=colour, alpha=0.15)
            p = r.get("weight_patterns", {}).get("2:4", {}).get(score)
            if p:
                ax.plot([100 * p["density"]], [p["perplexity"]], color=colour, marker="*", ms=10, ls="none")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("density of the decoder layers' weights (%); stars: 2:4")
        ax.set_ylabel("perplexity, held-out KJV chapters")
        ax.set_title(name(r), fontsize=9)
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+")
    parser.add_argument("--save", type=Path)
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    studies = load(args.roots)
    if not studies:
        raise SystemExit(f"no results.json with a weights curve below {args.roots}")
    for path, results in studies:
        print(table(results), "\n")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            m = results["model"]
            name = f"{m['family']}_{m['parameters'] // 10**6}M"
            artifacts.copy_file(path, args.save / f"{name}.json")
            artifacts.copy_file(path.with_name("run.json"), args.save / f"{name}_run.json")
    if args.figure:
        figure(studies, args.figure)


if __name__ == "__main__":
    main()
