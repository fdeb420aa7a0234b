"""The per-run structured report, seed_<s>/structured.json, with its figures (lottery/structured/figures.py).

For each procedure, score and unit kind: the largest fraction of the units removable with at most
`ticket.match_tolerance` loss of test accuracy against the dense network. Along a curve (the no-retrain grid, or the
levels of structured IMP and of each control branch) that is the last point before the first one below
dense - tolerance, so a lucky point beyond a failure does not count. Also: the dense model's accuracy beside chance,
accuracy by number of in-context examples, and the compact export of every structured IMP level (parameters, forward
time, largest output difference from the masked model).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.core.layout import LevelPaths, branch_dirs, branch_of, level_dirs
from lottery.core.matching import last_matching
from lottery.core.units import contract
from lottery.structured.export import compare
from lottery.structured.probe import Probe, Prompts
from lottery.structured.scoring import load_network

if TYPE_CHECKING:
    from lottery.structured.spec import StructuredSpec

COMPACT_BATCH = 512  # test prompts per timed forward pass


def removable(points: list[tuple[float, float]], dense_acc: float, tolerance: float) -> float:
    """The largest fraction removed, walking `points` (fraction, accuracy) by increasing fraction, before the first
    accuracy below dense_acc - tolerance (0.0 when the first point already fails)."""
    best = last_matching(sorted(points), dense_acc, tolerance)  # the one definition (lottery/core/matching.py)
    return 0.0 if best is None else best


def level_rows(level_dirs: list[Path], layout) -> list[dict[str, Any]]:
    """Per finished level: its test accuracy, and per unit kind the survivors and the fraction removed."""
    rows = []
    for d in level_dirs:
        lp = LevelPaths(d)
        if not lp.done:
            continue
        metrics = artifacts.read_json(lp.metrics, "level metrics")
        units = contract(artifacts.load_torch(lp.mask, "mask"), layout)
        rows.append(
            {
                "level": metrics["level"],
                "test_acc": metrics["test_acc"],
                "test_loss": metrics["test_loss"],
                "removed": {k: 1.0 - int(u.sum()) / u.numel() for k, u in units.items()},
                "heads": units["heads"].int().tolist(),
                "dir": str(d),
            }
        )
    return sorted(rows, key=lambda r: r["level"])


def imp_summary(rows: list[dict[str, Any]], kinds: list[str], dense_acc: float, tolerance: float) -> dict[str, Any]:
    return {
        "levels": [{k: v for k, v in r.items() if k != "dir"} for r in rows],
        "removable": {
            k: removable([(r["removed"][k], r["test_acc"]) for r in rows], dense_acc, tolerance) for k in kinds
        },
    }


def write_report(setup: StructuredSpec, no_retrain: dict[str, Any] | None) -> dict[str, Any]:
    from lottery.structured.figures import plot_by_context, plot_curves, plot_survival, plot_weights

    paths, plan = setup.paths, setup.plan
    tolerance = setup.cfg.ticket.match_tolerance
    dm = setup.datamodule
    load = lambda d: load_network(setup.network, artifacts.load_torch(LevelPaths(d).weights, "weights"))  # noqa: E731
    trunk = level_rows(level_dirs(paths.seed_dir), plan.layout)
    if not trunk or trunk[0]["level"] != 0:
        raise artifacts.ArtifactError(f"the structured report needs the trained level 0 in {paths.level(0).dir}")
    # the grid measured the dense level 0 already (for model=hf by the Probe, at the answer positions only: the full
    # logits of a large vocabulary need not fit); evaluated here only when there is no grid
    dense = no_retrain["dense"] if no_retrain is not None else None
    if dense is None:
        probe = Probe(load(paths.level(0).dir), dm.task, torch.device("cpu"), COMPACT_BATCH)
        dense = probe.evaluate(Prompts.of(dm.task, dm.x_test, dm.y_test))
    report: dict[str, Any] = {
        "tolerance": tolerance,
        "dense": {"test_acc": dense["acc"], "test_loss": dense["loss"], "by_context": dense["by_context"]},
        "chance": dm.task.chance(dm.y_test),
        "unit_totals": {k: plan.layout.size(k) for k in plan.layout.grids},
        "heads_grid": list(plan.layout.grids["heads"]),
    }
    if no_retrain is not None:
        report["no_retrain"] = no_retrain_section(no_retrain, dense["acc"], tolerance)
        report |= weights_part(no_retrain)
        if "weights" in no_retrain:
            report["unit_totals"]["weights"] = no_retrain["totals"]["weights"]
            report["model"] = {"family": type(setup.network()).__name__}
    branches = {branch_of(b): level_dirs(b) for b in branch_dirs(paths.seed_dir)}
    if len(trunk) > 1 or any(branches.values()):
        kinds = list(plan.kinds)
        imp = {"score": plan.score, "units": kinds, "trunk": imp_summary(trunk, kinds, dense["acc"], tolerance)}
        imp["branches"] = {}
        for name, dirs in branches.items():
            imp["branches"][name] = imp_summary(level_rows(dirs, plan.layout), kinds, dense["acc"], tolerance)
        x = dm.x_test[:COMPACT_BATCH]
        imp["compact"] = [
            {"level": r["level"], **compare(load(Path(r["dir"])), contract_of(Path(r["dir"]), plan.layout), x)}
            for r in trunk
        ]
        report["imp"] = imp
    artifacts.write_json(report, paths.seed_dir / "structured.json")
    plot_curves(report, paths.seed_dir / "heads_curve.png")
    plot_survival(report, no_retrain, paths.seed_dir / "heads_survival.png")
    if dense["by_context"] is not None:  # tasks without numbers of demonstrations have none
        plot_by_context(report, no_retrain, paths.seed_dir / "icl_by_context.png")
    if "weights" in report:
        plot_weights(report, paths.seed_dir / "weights.png")
    return report


def weights_part(results: dict[str, Any]) -> dict[str, Any]:
    """The weights kind's report entries (lottery/structured/weights.py): what was pruned and the N:M points."""
    if "weights" not in results:
        return {}
    drop = ("hits", "tokens", "by_context")
    patterns = {
        pattern: {sc: {k: v for k, v in p.items() if k not in drop} for sc, p in by.items()}
        for pattern, by in results["weight_patterns"].items()
    }
    return {"weights": results["weights"], "weight_patterns": patterns}


def no_retrain_section(results: dict[str, Any], dense_acc: float, tolerance: float) -> dict[str, Any]:
    """Per kind and score: the removable fraction (None where dense accuracy is too close to chance to claim one)
    and the curve."""
    claimed, point_claim = results.get("removable"), results.get("removable_point")
    keys = ("fraction", "removed", "density", "acc", "acc_ci", "drop_bound", "acc_sd", "loss", "loss_ci")
    keys += ("loss_rise_bound", "perplexity", "perplexity_ci")  # the weights kind (lottery/structured/weights.py)
    return {
        kind: {
            score: {
                "removable_fraction": claimed[kind][score]
                if claimed is not None
                else removable([(p["fraction"], p["acc"]) for p in points], dense_acc, tolerance),
                # the walk on point estimates alone (no interval), beside the claim at the stated confidence
                **({"removable_point": point_claim[kind][score]} if point_claim is not None else {}),
                "curve": [{k: p[k] for k in keys if k in p} for p in points],
            }
            for score, points in by_score.items()
        }
        for kind, by_score in results["curves"].items()
    }


def claim_line(dense_acc: float, chance: float, margin: float, meaningful: bool) -> str:
    if meaningful:
        return f"dense accuracy {dense_acc:.1%} is {dense_acc - chance:.1%} above chance ({chance:.1%})"
    return (
        f"dense accuracy {dense_acc:.1%} is less than {margin:.0%} above chance ({chance:.1%}): the model does not "
        "do this task, so no removable fraction is claimed (structured.min_above_chance)"
    )


def write_pretrained_report(setup: StructuredSpec, results: dict[str, Any], tracker=None) -> dict[str, Any]:
    """seed_<s>/structured.json and its figures for a pretrained model scored as loaded (no levels)."""
    from lottery.console import print_table
    from lottery.structured.figures import plot_by_context, plot_curves, plot_layers, plot_survival, plot_weights
    from lottery.structured.table import summary_table, weights_table

    dense, seed_dir = results["dense"], setup.paths.seed_dir
    shape = results["model"]["shape"]
    report: dict[str, Any] = {
        "procedure": "no_retrain on the pretrained weights as loaded (nothing trained)",
        "model": results["model"],
        "data": results["data"],
        "tolerance": results["tolerance"],
        "confidence": results.get("confidence"),
        "held_out_queries": results.get("held_out_queries"),
        "dense": {
            "test_acc": dense["acc"],
            "test_acc_ci": dense.get("acc_ci"),
            "test_loss": dense["loss"],
            "by_context": dense["by_context"],
        },
        "chance": results["chance"],
        "meaningful": results["meaningful"],
        "claim": claim_line(dense["acc"], results["chance"], results["min_above_chance"], results["meaningful"]),
        "unit_totals": results["totals"],
        "heads_grid": [shape["n_layers"], shape["n_heads"]],
        "no_retrain": no_retrain_section(results, dense["acc"], results["tolerance"]),
    }
    for key in ("layer_removal", "census", "run"):
        if key in results:
            report[key] = results[key]
    run_file = seed_dir / "no_retrain" / "run.json"  # how the study ran, kept apart from what it measured
    if "run" not in report and run_file.is_file():
        report["run"] = artifacts.read_json(run_file, "no-retrain run record")
    if "combined" in results:
        report["combined"] = {k: v for k, v in results["combined"].items() if k != "ffn_scores"}
    report |= weights_part(results)
    artifacts.write_json(report, seed_dir / "structured.json")
    figures = {
        "curves": seed_dir / "heads_curve.png",
        "survival": seed_dir / "heads_survival.png",
        "by_context": seed_dir / "icl_by_context.png",
        "layers": seed_dir / "layers.png",
        "weights": seed_dir / "weights.png",
    }
    plot_curves(report, figures["curves"])
    plot_survival(report, results, figures["survival"])
    if dense["by_context"] is not None:
        plot_by_context(report, results, figures["by_context"])
    if "layer_removal" in results:
        plot_layers(report, figures["layers"])
    if "weights" in results:
        plot_weights(report, figures["weights"])
    print_table(summary_table(report))
    if "weights" in results:
        print_table(weights_table(report))
    if tracker is not None:
        tracker.log_structured(report, {k: p for k, p in figures.items() if p.is_file()})
    return report


def contract_of(level_dir: Path, layout):
    return contract(artifacts.load_torch(LevelPaths(level_dir).mask, "mask"), layout)
