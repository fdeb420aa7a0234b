"""Are models undertrained? (experiments/README.md) The over-training study across model sizes and seeds, from the
over_training.json files of `lottery -m experiment=over_training model.width=1,2,4 seed=0,1`.

    python experiments/over_training_table.py outputs/over_training \\
        [--save experiments/results/over_training] [--figure experiments/figures/over_training.png]

Prints, as markdown, per size (parameters) and series point (step, tokens per parameter): dense perplexity, the
fraction of heads and of FFN units removable within tolerance (gradient ranking, and random), the perplexity over
dense with half of the decoder weights removed (magnitude and Wanda, unstructured and 2:4), the dead FFN units, and
the Spearman correlation of the point's gradient ranking with the final one's. With several seeds per size, each cell
is the mean over seeds with its range. Then per size the step from which each ranking agrees with the final one
(Spearman >= 0.8 at every later point), and the cost of the study against the training.
With --save, copies every over_training.json (named <parameters>_s<seed>.json) and writes summary.json; with
--figure: removable fraction against tokens per parameter, one line per size and unit kind, beside the weights'
perplexity at 50% and the ranking agreement.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lottery.core import artifacts

KINDS = ("heads", "mlp_units")
SCORE = "gradient"


def load(roots: list[str]) -> dict[int, dict[int, dict]]:
    """{parameters: {seed: over_training.json}}."""
    out: dict[int, dict[int, dict]] = {}
    for root in roots:
        for path in sorted(Path(root).glob("**/seed_*/over_training.json")):
            study = json.loads(path.read_text())
            seed = int(path.parent.name.removeprefix("seed_"))
            study["_path"] = str(path)
            out.setdefault(study["model"]["parameters"], {})[seed] = study
    return dict(sorted(out.items()))


def cell(values: list[float | None], fmt: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.fmean(vals), fmt)} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"


def rows(by_seed: dict[int, dict]) -> list[dict]:
    """One row per series point, each value a list over seeds."""
    studies = list(by_seed.values())
    out = []
    for i, first in enumerate(studies[0]["points"]):
        points = [s["points"][i] for s in studies]

        def get(fn, points=points):
            values = []
            for p in points:
                try:
                    values.append(fn(p))
                except (KeyError, TypeError):
                    values.append(None)
            return values

        row = {
            "step": first["step"],
            "tokens_per_parameter": first["tokens_per_parameter"],
            "perplexity": get(lambda p: p["dense"]["perplexity"]),
            "acc": get(lambda p: p["dense"]["acc"]),
            "dead": get(lambda p: p["dead_units"]["fraction"]),
        }
        for kind in KINDS:
            row[f"{kind}_{SCORE}"] = get(lambda p, k=kind: p["removable"][k][SCORE])
            row[f"{kind}_magnitude"] = get(lambda p, k=kind: p["removable"][k]["magnitude"])
            row[f"{kind}_random"] = get(lambda p, k=kind: p["removable"][k]["random"])
            row[f"{kind}_rho"] = get(lambda p, k=kind: p["agreement"][k][SCORE]["spearman"])
            row[f"{kind}_rho_random"] = get(lambda p, k=kind: p["agreement"][k][SCORE]["spearman_random"])
        for score in ("magnitude", "wanda"):
            for key in ("0.5", "2:4"):
                row[f"{score}_{key}"] = get(lambda p, s=score, k=key: p["weights"][s][k]["perplexity_ratio"])
        out.append(row)
    return out


def table(params: int, by_seed: dict[int, dict]) -> str:
    head = (
        "| step | tokens/param | perplexity | heads removable (gradient / random) | FFN units removable (gradient / "
        "random) | 50% weights: magnitude / Wanda (x dense) | 2:4: magnitude / Wanda | dead FFN units | Spearman "
        "with final (heads / FFN units) |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [f"**{params:,} parameters** (seeds {sorted(by_seed)})", "", head]
    for r in rows(by_seed):
        lines.append(
            f"| {r['step']} | {r['tokens_per_parameter']:.3g} | {cell(r['perplexity'], '.2f')} "
            f"| {cell(r['heads_gradient'], '.0%')} / {cell(r['heads_random'], '.0%')} "
            f"| {cell(r['mlp_units_gradient'], '.0%')} / {cell(r['mlp_units_random'], '.0%')} "
            f"| {cell(r['magnitude_0.5'], '.2f')} / {cell(r['wanda_0.5'], '.2f')} "
            f"| {cell(r['magnitude_2:4'], '.2f')} / {cell(r['wanda_2:4'], '.2f')} "
            f"| {cell(r['dead'], '.1%')} | {cell(r['heads_rho'], '.2f')} / {cell(r['mlp_units_rho'], '.2f')} |"
        )
    return "\n".join(lines)


def settles(by_seed: dict[int, dict]) -> dict[str, list]:
    out: dict[str, list] = {}
    for _, study in sorted(by_seed.items()):
        for kind, by_score in study["settles"].items():
            for score, step in by_score.items():
                out.setdefault(f"{kind} by {score}", []).append(step)
    return out


def figure(studies: dict[int, dict[int, dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for c, (params, by_seed) in enumerate(studies.items()):
        colour = f"C{c}"
        rs = rows(by_seed)
        x = [r["tokens_per_parameter"] for r in rs]

        def mean(values):
            vals = [v for v in values if v is not None]
            return statistics.fmean(vals) if vals else None

        for kind, line in zip(KINDS, ("-", "--"), strict=True):
            ys = [mean(r[f"{kind}_{SCORE}"]) for r in rs]
            axes[0].plot(x, [None if y is None else 100 * y for y in ys], color=colour, ls=line, marker="o", ms=3,
                         label=f"{params:,} params, {kind.replace('_', ' ')}")  # fmt: skip
            axes[2].plot(x, [mean(r[f"{kind}_rho"]) for r in rs], color=colour, ls=line, marker="o", ms=3,
                         label=f"{params:,}, {kind.replace('_', ' ')}")  # fmt: skip
        for score, line in (("wanda", "-"), ("magnitude", ":")):
            axes[1].plot(x, [mean(r[f"{score}_0.5"]) for r in rs], color=colour, ls=line, marker="o", ms=3,
                         label=f"{params:,}, {score} 50%")  # fmt: skip
    axes[0].set_ylabel(f"removable within tolerance (%), ranked by {SCORE}")
    axes[1].set_ylabel("perplexity over dense, 50% of decoder weights removed")
    axes[1].set_yscale("log")
    axes[2].set_ylabel(f"Spearman of the {SCORE} ranking with the final one")
    axes[2].axhline(0.8, color="k", lw=0.6, ls=":")
    for ax in axes:
        ax.set_xscale("log")
        ax.axvline(20, color="0.5", lw=0.6, ls="--")  # Chinchilla's 20 tokens per parameter
        ax.set_xlabel("tokens per parameter (dashed: 20)")
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.suptitle("character-level LMs on the King James Bible, along training (mean over seeds)", fontsize=9)
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
        raise SystemExit(f"no over_training.json below {args.roots}: run lottery experiment=over_training first")
    summary = {}
    for params, by_seed in studies.items():
        print(table(params, by_seed), "\n")
        steps = settles(by_seed)
        cost = [s["cost"]["study_over_training"] for s in by_seed.values()]
        print("ranking agrees with the final one (Spearman >= 0.8 at every later point) from step:",
              "; ".join(f"{k}: {v}" for k, v in steps.items()))  # fmt: skip
        print(f"study / training wall time: {cell(cost, '.2f')}\n")
        summary[params] = {"seeds": sorted(by_seed), "rows": rows(by_seed), "settles": steps, "cost": cost}
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for seed, study in by_seed.items():
                artifacts.copy_file(Path(study["_path"]), args.save / f"{params}_s{seed}.json")
    if args.save:
        artifacts.write_json(summary, args.save / "summary.json")  # temporary file, then rename
    if args.figure:
        figure(studies, args.figure)


if __name__ == "__main__":
    main()
