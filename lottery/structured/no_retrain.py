"""Procedure (a), pruning without retraining (the protocol of Bansal et al. 2023): score every unit of the dense trained
network (level 0) once, remove the least important x% of a kind's units for each x in `structured.grid`, and evaluate
the result on the test prompts with no retraining. Each kind (heads, MLP blocks, MLP units) is pruned on its own,
ranked over all layers together; `random` removes as many units at random, `structured.random_draws` times.

Results: seed_<s>/no_retrain/results.json, written atomically and recomputed (in seconds) only when the grid, kinds,
scores or draws change. Per kind and score: the curve (fraction removed, units removed, test accuracy and loss, with
their spread over random draws), accuracy by number of in-context examples at each point, the surviving heads at each
point, and the scores themselves (for lottery-compare's rank correlations).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.pruning import keep_count
from lottery.core.unit_scores import SCORES
from lottery.core.units import expand, full_units, keep_top, random_scores
from lottery.structured.grid import draw_seed, grid_record, mean_point
from lottery.structured.scoring import UnitScorer, load_network

if TYPE_CHECKING:
    from lottery.structured.spec import StructuredSpec

EVAL_CHUNK = 8192  # the chunk LevelModule.evaluate uses, so the dense network's numbers match metrics.json exactly


@torch.no_grad()
def test_outputs(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    network.eval()
    return torch.cat([network(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])


def evaluate(network: torch.nn.Module, task: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    outputs = test_outputs(network, x)
    acc, loss = task.metrics(outputs, y)
    return {"acc": acc, "loss": loss, "by_context": task.by_context(outputs, y)}


def run_no_retrain(setup: StructuredSpec) -> dict[str, Any]:
    path = setup.paths.seed_dir / "no_retrain" / "results.json"
    settings = grid_record(setup.cfg.structured, setup.cfg.ticket.match_tolerance)
    if path.is_file():
        previous = artifacts.read_json(path, "no-retrain results")
        if previous.get("settings") == settings:
            return previous
    dm = setup.datamodule
    weights = artifacts.load_torch(setup.paths.level(0).weights, "dense trained weights")
    network = load_network(setup.network, weights)
    layout = network.layout()
    shapes = {n: tuple(w.shape) for n, w in M.prunable_weights(network).items()}
    dense = evaluate(network, dm.task, dm.x_test, dm.y_test)
    kinds = tuple(settings["units"])
    # a network trained from scratch has no layers kind: its scores are magnitude and gradient, and random removal
    learned = [s for s in settings["scores"] if s in SCORES]
    scorer = UnitScorer(setup.network, dm, setup.cfg.structured.score_examples)
    scores = {s: scorer(weights, s, kinds, layout) for s in learned}
    alive = full_units(layout)

    def removed_eval(units: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        network.load_state_dict(M.masked_state_dict(weights, expand(units, layout, shapes)))
        return evaluate(network, dm.task, dm.x_test, dm.y_test)

    curves: dict[str, dict[str, list]] = {}
    for kind in kinds:
        n = layout.size(kind)
        curves[kind] = {}
        for score in [s for s in settings["scores"] if s in (*SCORES, "random")]:
            points = []
            for fraction in settings["grid"]:
                keep = keep_count(n, 1.0 - fraction)
                if score == "random":
                    draws, first = [], None
                    for draw in range(settings["random_draws"]):
                        gen = torch.Generator().manual_seed(draw_seed(setup.cfg.seed, kind, draw))
                        kept = keep_top(random_scores(layout, (kind,), gen), alive, {kind: keep})
                        first = first or kept  # the surviving units shown for random: the first draw's
                        draws.append(removed_eval({**alive, **kept}))
                    point, kept = mean_point(draws), first
                else:
                    kept = keep_top({kind: scores[score][kind]}, alive, {kind: keep})
                    point = mean_point([removed_eval({**alive, **kept})])
                point |= {"fraction": fraction, "removed": n - keep, "kept": kept[kind].int().tolist()}
                points.append(point)
            curves[kind][score] = points
    results = {
        "settings": settings,
        "dense": dense,
        "chance": dm.task.chance(dm.y_test),
        "totals": {k: layout.size(k) for k in kinds},
        "grids": {k: list(layout.grids[k]) for k in kinds},
        "curves": curves,
        "scores": {s: {k: v.tolist() for k, v in scores[s].items()} for s in learned},
    }
    artifacts.write_json(results, path)
    return results
