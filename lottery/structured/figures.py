"""Figures of the structured report (files only, no display):

heads_curve.png     test accuracy against the share of units removed, per unit kind: no-retrain curves for each
                    score with the random control (mean and spread over draws), structured IMP and its controls
heads_survival.png  per layer x head: importance of each head by each score, crossed out where removal at the
                    removable fraction takes it; then the heads that survive each structured IMP level
icl_by_context.png  accuracy by number of in-context examples: dense, and with heads removed
layers.png          per decoder layer: test accuracy with that layer alone removed, and its angular distance
weights.png         weights pruned without retraining: perplexity against density per score, N:M patterns as points
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lottery.reports.plotting import pyplot, save

STYLE = {
    "magnitude": ("C0", "o", "-"),
    "gradient": ("C1", "s", "-"),
    "angular": ("C2", "D", "-"),
    "single": ("C4", "v", "-"),
    "random": ("0.45", "x", "--"),
    "wanda": ("C3", "P", "-"),
}
BRANCH_STYLE = {"random_prune": ("0.3", "x", ":"), "oneshot": ("C2", "d", "-."), "random_reinit": ("C4", "^", ":")}


def _plt():
    return pyplot()


def _references(ax, report: dict[str, Any]) -> None:
    dense, tol = 100 * report["dense"]["test_acc"], 100 * report["tolerance"]
    ax.axhline(dense, color="k", lw=0.8, label=f"dense {dense:.1f}%")
    ax.axhline(dense - tol, color="k", lw=0.6, ls=":", label=f"dense - {tol:g} pt")
    ax.axhline(100 * report["chance"], color="C3", lw=0.8, ls=":", label=f"chance {100 * report['chance']:.1f}%")


def plot_curves(report: dict[str, Any], out: Path) -> None:
    plt = _plt()
    kinds = list(dict.fromkeys([*report.get("no_retrain", {}), *report.get("imp", {}).get("units", [])]))
    if not kinds:
        return
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.2), squeeze=False)
    dense = 100 * report["dense"]["test_acc"]
    for ax, kind in zip(axes[0], kinds, strict=True):
        for score, result in report.get("no_retrain", {}).get(kind, {}).items():
            colour, marker, line = STYLE.get(score, ("C5", ".", "-"))
            xs = [0.0] + [100 * p["fraction"] for p in result["curve"]]
            ys = [dense] + [100 * p["acc"] for p in result["curve"]]
            fraction = result["removable_fraction"]
            claimed = "not claimed" if fraction is None else f"{100 * fraction:.0f}%"
            label = f"{score}, no retraining (removable {claimed})"
            ax.plot(xs, ys, color=colour, marker=marker, ls=line, ms=3, label=label)
            if score == "random":
                sd = [0.0] + [100 * p["acc_sd"] for p in result["curve"]]
                ax.fill_between(
                    xs,
                    [y - s for y, s in zip(ys, sd, strict=True)],
                    [y + s for y, s in zip(ys, sd, strict=True)],
                    color=colour,
                    alpha=0.2,
                )
        imp = report.get("imp")
        if imp and kind in imp["units"]:
            lines = [("IMP " + imp["score"] + ", retrained", imp["trunk"], ("k", "^", "-"))]
            lines += [(f"{b} control", v, BRANCH_STYLE.get(b, ("C6", ".", ":"))) for b, v in imp["branches"].items()]
            for label, summary, (colour, marker, line) in lines:
                rows = summary["levels"]
                if not rows:
                    continue
                ax.plot(
                    [100 * r["removed"][kind] for r in rows],
                    [100 * r["test_acc"] for r in rows],
                    color=colour,
                    marker=marker,
                    ls=line,
                    ms=4,
                    label=f"{label} (removable {100 * summary['removable'][kind]:.0f}%)",
                )
        _references(ax, report)
        ax.set_xlabel(f"{kind.replace('_', ' ')} removed (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{kind.replace('_', ' ')} ({report['unit_totals'][kind]} in all)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    save(fig, out)


def plot_survival(report: dict[str, Any], no_retrain: dict[str, Any] | None, out: Path) -> None:
    plt = _plt()
    panels = []  # (title, values grid, removed grid or None, colour map)
    for score, by_kind in ((no_retrain or {}).get("scores") or {}).items():
        if "heads" not in by_kind:
            continue
        result = report["no_retrain"]["heads"][score]
        fraction = result["removable_fraction"] or 0.5
        point = min(no_retrain["curves"]["heads"][score], key=lambda p: abs(p["fraction"] - fraction))
        removed = [[not k for k in row] for row in point["kept"]]
        title = f"{score} importance; x: removed at {100 * point['fraction']:.0f}%"
        panels.append((title, by_kind["heads"], removed, "viridis"))
    for row in report.get("imp", {}).get("trunk", {}).get("levels", [])[1:]:
        title = f"IMP level {row['level']}: {100 * (1 - row['removed']['heads']):.0f}% of heads survive"
        panels.append((title, row["heads"], None, "Greens"))
    if not panels:
        return
    panels = panels[:8]
    layers, heads = report["heads_grid"]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(0.45 * heads * len(panels) + 1.8 * len(panels), 0.45 * layers + 1.6), squeeze=False
    )
    for ax, (title, values, removed, cmap) in zip(axes[0], panels, strict=True):
        image = ax.imshow(
            values, cmap=cmap, aspect="auto", vmin=0 if removed is None else None, vmax=1 if removed is None else None
        )
        for i in range(layers):
            for j in range(heads):
                if removed is not None and removed[i][j]:
                    ax.text(j, i, "x", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(heads))
        ax.set_yticks(range(layers))
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=7)
        if removed is not None:
            fig.colorbar(image, ax=ax, fraction=0.046)
    save(fig, out)


def plot_by_context(report: dict[str, Any], no_retrain: dict[str, Any] | None, out: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    dense = report["dense"]["by_context"]
    ax.plot(dense["examples"], [100 * a for a in dense["acc"]], color="k", marker="o", ms=3, label="dense")
    curves = (no_retrain or {}).get("curves", {}).get("heads", {})
    removable = report.get("no_retrain", {}).get("heads", {})
    for score, points in curves.items():
        fraction = removable.get("gradient", {}).get("removable_fraction") or 0.5
        point = min(points, key=lambda p: abs(p["fraction"] - fraction))
        colour, marker, line = STYLE.get(score, ("C5", ".", "-"))
        ctx = point["by_context"]
        ax.plot(
            ctx["examples"],
            [100 * a for a in ctx["acc"]],
            color=colour,
            marker=marker,
            ls=line,
            ms=3,
            label=f"{100 * point['fraction']:.0f}% of heads removed by {score}",
        )
    ax.axhline(100 * report["chance"], color="C3", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("in-context examples before the query")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
    save(fig, out)


def plot_layers(report: dict[str, Any], out: Path) -> None:
    """Each layer removed alone: test accuracy (bars) against its angular distance (line, right axis)."""
    plt = _plt()
    rows = report["layer_removal"]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(rows) + 2), 4))
    layers = [r["layer"] for r in rows]
    ax.bar(layers, [100 * r["acc"] for r in rows], color="C0", alpha=0.7, label="accuracy, this layer removed")
    _references(ax, report)
    twin = ax.twinx()
    twin.plot(layers, [r["angular_distance"] for r in rows], color="C2", marker="D", ms=3, label="angular distance")
    twin.set_ylabel("angular distance of input and output (/ pi)")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=6, loc="lower right")
    save(fig, out)


def plot_weights(report: dict[str, Any], out: Path) -> None:
    """Perplexity (log scale) against the density of the decoder layers' weights: each score's unstructured curve with
    its interval, its N:M points, and dense."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    dense = report["weights"]["dense"]
    ax.axhline(dense["perplexity"], color="k", lw=0.8, label=f"dense {dense['perplexity']:.2f}")
    for score, result in report["no_retrain"].get("weights", {}).items():
        colour, marker, line = STYLE.get(score, ("C5", ".", "-"))
        curve = result["curve"]
        xs = [100 * p["density"] for p in curve]
        ax.plot(xs, [p["perplexity"] for p in curve], color=colour, marker=marker, ls=line, ms=3, label=score)
        low, high = zip(*(p["perplexity_ci"] for p in curve), strict=True)
        ax.fill_between(xs, low, high, color=colour, alpha=0.15)
        for pattern, by_score in report.get("weight_patterns", {}).items():
            if score in by_score:
                p = by_score[score]
                ax.plot([100 * p["density"]], [p["perplexity"]], color=colour, marker="*", ms=9, ls="none")
                ax.annotate(
                    pattern,
                    (100 * p["density"], p["perplexity"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density of the decoder layers' weights (%)")
    ax.set_ylabel("perplexity on held-out prompts")
    ax.set_title(f"{report['model'].get('family', '')}: weights pruned without retraining (stars: N:M)", fontsize=9)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save(fig, out)


def transfer_figure(transfer: dict[str, Any], out: Path) -> None:
    """transfer.png: one row per kind and score; left, accuracy on every task target against the share removed (the
    score's removals solid, random removal of as many units dotted, same colour); right, each text's perplexity
    over dense (the same)."""
    plt = _plt()
    rows = [(k, sc) for k, by in transfer["curves"].items() for sc in by if sc != "random"]
    if not rows:
        return
    tasks = [t["name"] for t in transfer["targets"] if t["kind"] == "task"]
    texts = [t["name"] for t in transfer["targets"] if t["kind"] == "text"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.0 * len(rows)), squeeze=False)
    for (kind, score), (left, right) in zip(rows, axes, strict=True):
        by = transfer["curves"][kind]
        for style, name in ((("-", "o"), score), ((":", "x"), "random")):
            if name not in by:
                continue
            xs = [0.0] + [100 * p["fraction"] for p in by[name]]
            for i, t in enumerate(tasks):
                ys = [100 * transfer["dense"][t]["acc"]] + [100 * p["on"][t]["acc"] for p in by[name]]
                left.plot(xs, ys, color=f"C{i}", ls=style[0], marker=style[1], ms=3, label=t if name == score else None)
            for i, t in enumerate(texts):
                base = transfer["dense"][t]["perplexity"]
                ys = [1.0] + [p["on"][t]["perplexity"] / base for p in by[name]]
                right.plot(
                    xs, ys, color=f"C{i}", ls=style[0], marker=style[1], ms=3, label=t if name == score else None
                )
        left.set(title=f"{kind} by {score} (dotted: random)", xlabel="% of units removed", ylabel="accuracy (%)")
        right.set(title=f"{kind} by {score}: text", xlabel="% of units removed", ylabel="perplexity / dense")
        right.set_yscale("log")
        for ax in (left, right):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle(f"pruned for {transfer['source']}, measured on other tasks and text")
    fig.tight_layout()
    save(fig, out)


def plot_over_training(study: dict[str, Any], out: Path) -> None:
    """Along the checkpoint series, against tokens per parameter (log scale): the removable fraction of each unit kind
    by its scores, how well each point's ranking agrees with the final one (Spearman, beside random), and the
    weights' perplexity at 50% density (unstructured and 2:4) over dense."""
    plt = _plt()
    points = study["points"]
    x = [p["tokens_per_parameter"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    kinds = sorted({k for p in points for k in p["removable"] if k != "weights"})
    for i, kind in enumerate(kinds):
        for score in sorted({s for p in points for s in p["removable"].get(kind, {})}):
            ys = [p["removable"].get(kind, {}).get(score) for p in points]
            ys = [None if y is None else 100 * y for y in ys]
            colour, marker, _ = STYLE.get(score, ("C5", ".", "-"))
            line = ["-", "--", ":", "-."][i % 4]
            axes[0].plot(x, ys, color=colour, marker=marker, ls=line, ms=3, label=f"{kind} by {score}")
    axes[0].set_ylabel("removable within tolerance (%)")
    for i, kind in enumerate(sorted({k for p in points for k in p["agreement"]})):
        for score in sorted({s for p in points for s in p["agreement"].get(kind, {})}):
            ys = [p["agreement"].get(kind, {}).get(score, {}).get("spearman") for p in points]
            colour, marker, _ = STYLE.get(score, ("C5", ".", "-"))
            line = ["-", "--", ":", "-."][i % 4]
            axes[1].plot(x, ys, color=colour, marker=marker, ls=line, ms=3, label=f"{kind} by {score}")
            random = [p["agreement"].get(kind, {}).get(score, {}).get("spearman_random") for p in points]
            axes[1].plot(x, random, color=colour, ls=":", lw=0.6)
    axes[1].axhline(0.8, color="k", lw=0.6, ls=":", label="Spearman 0.8")
    axes[1].set_ylabel("Spearman with the final ranking (dotted: random, 95%)")
    for score in sorted({s for p in points for s in p["weights"]}):
        colour, marker, _ = STYLE.get(score, ("C5", ".", "-"))
        for key, line in (("0.5", "-"), ("2:4", "--")):
            ys = [p["weights"].get(score, {}).get(key, {}).get("perplexity_ratio") for p in points]
            if any(y is not None for y in ys):
                axes[2].plot(x, ys, color=colour, marker=marker, ls=line, ms=3, label=f"{score}, {key}")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("perplexity over dense at 50% of weights")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("tokens per parameter")
        ax.grid(True, alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"{study['model']['class']} ({study['model']['parameters']:,} parameters) along training", fontsize=9)
    save(fig, out)
