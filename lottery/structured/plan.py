"""Structured IMP: the trunk's levels remove whole heads / MLP units / MLP blocks instead of single weights.

A StructuredPlan answers the same interface as the weight PruningPlan (lottery/core/pruning.py `Plan`: `layers`,
`scope`, `keep_counts` for level keys, `prune`, `random_like` for the random-pruning control, `report` for
sparsity.json), so the driver and the branches never ask which plan they hold. It `prune`s so that level L keeps, of
each kind in `structured.units`, the round(n * d_L) surviving units with the highest score on level L-1's trained
weights, d_L from the pruning schedule (so `pruning=global_20` removes 20% of the remaining heads per level). Units are
ranked over all layers together (`structured.scope=global`) or within each layer (`layerwise`; MLP blocks, one per
layer, are always ranked globally). The unit mask is expanded to a weight mask (lottery/core/units.py), so masks,
rewinding and resume work unchanged.

In sparsity.json and metrics.json of a structured level, `density` is the share of prunable weights kept and
`target_density` the schedule's share of units kept; `units` holds each kind's surviving units, per layer.

The controls follow from the interface: random_prune removes as many units of each kind (per layer under layerwise
scope) at random; oneshot ranks the dense trained units once, straight to level L's count; random_reinit keeps the
trunk's mask.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lottery.core import masks as M
from lottery.core.pruning import keep_count
from lottery.core.schedule import SparsitySchedule
from lottery.core.units import UnitLayout, UnitMask, contract, counts, expand, keep_top, random_like


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

    @classmethod
    def build(
        cls,
        settings: Any,
        layout: UnitLayout,
        schedule: SparsitySchedule,
        shapes: Mapping[str, tuple[int, ...]],
        scorer: Callable[..., dict[str, torch.Tensor]],
    ) -> StructuredPlan:
        """The plan of `structured.*` settings (validated beforehand by lottery/structured/checks.py)."""
        return cls(
            layout=layout,
            kinds=tuple(settings.units),
            score=settings.score,
            unit_scope=settings.scope,
            schedule=schedule,
            shapes=dict(shapes),
            scorer=scorer,
            score_examples=settings.score_examples,
        )

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

    def random_like(self, mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> M.Mask:
        """As many units of each pruned kind kept as `mask` keeps (per layer under layerwise scope), at random."""
        units = self.units_of(mask)
        randomised = dict(units)
        for kind in self.kinds:
            randomised.update(random_like({kind: units[kind]}, self.scope_of(kind), generator))
        return expand(randomised, self.layout, self.shapes)

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
