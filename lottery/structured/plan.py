"""Structured IMP: the trunk's levels remove whole heads / MLP units / MLP blocks instead of single weights.

`configure` (called by lottery.imp.prepare for pruning.strategy=structured) puts a StructuredPlan where the weight
PruningPlan was. It answers what the driver asks of a plan (`layers`, `scope`, `keep_counts` for level keys, `report`
for sparsity.json and metrics.json) and `prune`s: level L keeps, of each kind in `structured.units`, the
round(n * d_L) surviving units with the highest score on level L-1's trained weights, d_L from the pruning schedule
(so `pruning=global_20` removes 20% of the remaining heads per level). Units are ranked over all layers together
(`structured.scope=global`) or within each layer (`layerwise`; MLP blocks, one per layer, are always ranked globally).
The unit mask is expanded to a weight mask (lottery/core/units.py), so masks, rewinding and resume work unchanged.

In sparsity.json and metrics.json of a structured level, `density` is the share of prunable weights kept and
`target_density` the schedule's share of units kept; `units` holds each kind's surviving units, per layer.

Controls (`branch=`): random_prune removes as many units of each kind (per layer under layerwise scope) at random;
oneshot ranks the dense trained units once, straight to level L's count; random_reinit keeps the trunk's mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.pruning import keep_count
from lottery.core.schedule import SparsitySchedule
from lottery.core.units import UnitLayout, UnitMask, contract, counts, expand, full_units, keep_top, random_like

if TYPE_CHECKING:
    from lottery.imp import Setup


@dataclass
class StructuredPlan:
    layout: UnitLayout
    kinds: tuple[str, ...]  # unit kinds IMP removes
    score: str
    unit_scope: str  # global | layerwise
    schedule: SparsitySchedule
    shapes: dict[str, tuple[int, ...]]  # every prunable weight: the keys of each level's mask
    scorer: Callable[..., dict[str, torch.Tensor]]  # (weights, score, kinds, layout) -> unit scores
    score_examples: int
    ignored: tuple[str, ...] = ()

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    @property
    def scope(self) -> str:
        return f"units/{self.unit_scope}"

    def scope_of(self, kind: str) -> str:
        return "global" if kind == "mlp_blocks" else self.unit_scope

    def unit_keep(self, level: int) -> dict[str, int | list[int]]:
        """How many units of each pruned kind survive at `level`: a count, or a count per layer (layerwise)."""
        d = self.schedule.density(level)
        out: dict[str, int | list[int]] = {}
        for kind in self.kinds:
            grid = self.layout.grids[kind]
            if self.scope_of(kind) == "global":
                out[kind] = keep_count(self.layout.size(kind), d)
            else:
                out[kind] = [keep_count(self.layout.size(kind) // grid[0], d)] * grid[0]
        return out

    def keep_counts(self, sizes: Mapping[str, int], level: int) -> dict[str, Any]:
        """What level L's units depend on, for lottery.imp.Setup.level_key: the counts, and what ranked them."""
        tag = f"{self.score}/{self.unit_scope}" + (f"/n={self.score_examples}" if self.score == "gradient" else "")
        return {f"{kind}@{tag}": keep for kind, keep in self.unit_keep(level).items()}

    def units_of(self, mask: Mapping[str, torch.Tensor]) -> UnitMask:
        return contract(mask, self.layout)

    def select(self, scores: Mapping[str, torch.Tensor], alive: Mapping[str, torch.Tensor], level: int) -> M.Mask:
        keep = self.unit_keep(level)
        kept = dict(alive)
        for kind in self.kinds:
            kept.update(keep_top({kind: scores[kind]}, alive, {kind: keep[kind]}, self.scope_of(kind)))
        return expand(kept, self.layout, self.shapes)

    def prune(self, weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], level: int) -> M.Mask:
        """Level `level`'s mask: the highest-scoring surviving units of `mask`, scored on `weights`."""
        alive = self.units_of(mask)
        return self.select(self.scorer(weights, self.score, self.kinds, self.layout), alive, level)

    def report(self, mask: Mapping[str, torch.Tensor], level: int) -> dict[str, Any]:
        return {
            "total": M.total(mask),
            "remaining": M.remaining(mask),
            "density": M.density(mask),
            "target_density": self.schedule.density(level),
            "layers": M.per_layer_counts(mask),
            "dense_layers": [],
            "units": counts(self.units_of(mask)),
            "unit_kinds": list(self.kinds),
            "unit_score": self.score,
        }


def configure(setup: Setup, weights: Mapping[str, torch.Tensor]) -> None:
    """Switch a prepared Setup to structured pruning (validated beforehand by lottery.structured.checks)."""
    from lottery.structured.scoring import unit_scores

    s = setup.cfg.structured
    setup.plan = StructuredPlan(
        layout=setup.network().layout(),
        kinds=tuple(s.units),
        score=s.score,
        unit_scope=s.scope,
        schedule=setup.plan.schedule,
        shapes={n: tuple(w.shape) for n, w in weights.items()},
        scorer=partial(unit_scores, setup),
        score_examples=s.score_examples,
    )
    setup.shapes = dict(setup.plan.shapes)
    # Level 0 (dense training) does not depend on how units are later ranked: keep structured.* out of its key, so
    # runs that differ only in score or units share one trained level 0 (lottery/reuse.py). Level keys from 1 on
    # name the score and unit kinds through keep_counts.
    setup.base_inputs = {k: v for k, v in setup.base_inputs.items() if not k.startswith("structured.")}
    if s.procedure == "no_retrain":
        setup.levels = 0


def branch_mask(setup: Setup, branch: str, level: int) -> M.Mask:
    """The unit-level controls of a structured trunk (see the module docstring)."""
    from lottery.branches.controls import branch_seed

    plan: StructuredPlan = setup.plan  # type: ignore[assignment]
    trunk = artifacts.load_torch(setup.paths.level(level).mask, "trunk mask")
    if branch == "random_reinit":
        return trunk
    if branch == "random_prune":
        generator = torch.Generator().manual_seed(branch_seed(setup.cfg.seed, branch, level))
        units = plan.units_of(trunk)
        randomised = dict(units)
        for kind in plan.kinds:
            randomised.update(random_like({kind: units[kind]}, plan.scope_of(kind), generator))
        return expand(randomised, plan.layout, plan.shapes)
    dense_trained = artifacts.load_torch(setup.paths.level(0).weights, "dense trained weights")
    scores = plan.scorer(dense_trained, plan.score, plan.kinds, plan.layout)
    return plan.select(scores, full_units(plan.layout), level)
