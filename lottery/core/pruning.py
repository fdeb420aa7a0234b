"""Magnitude pruning of the surviving weights, globally or layer by layer.

Targets are densities per level, taken from the closed form of the schedule rather than compounded level by level,
so rounding never accumulates: level L of a layer with n weights keeps exactly round_half_up(n * d_L) weights (global
scope: of all prunable weights together). Ties in magnitude are broken by position (earlier index kept), via a stable
sort, so the same weights always give the same mask on every machine.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from lottery.core.masks import Mask, density, layer_of, per_layer_counts, remaining, total
from lottery.core.overlap import random_mask_like
from lottery.core.schedule import PruningConfigError, SparsitySchedule, check_fraction

SCOPES = ("global", "layerwise")
__all__ = ["SCOPES", "Plan", "PruningConfigError", "PruningPlan", "check_fraction", "keep_count", "prune"]


class Plan(Protocol):
    """What the driver, the branches and the reports ask of a pruning plan. PruningPlan (single weights, below) and
    StructuredPlan (whole heads and MLP units, lottery/structured/plan.py) both answer it, so no caller asks which
    one it holds."""

    schedule: SparsitySchedule

    @property
    def layers(self) -> tuple[str, ...]:
        """The weights every level's mask covers."""
        ...

    @property
    def scope(self) -> str: ...

    def keep_counts(self, sizes: Mapping[str, int], level: int) -> dict[str, Any]:
        """Exactly what survives at `level` (for the level keys that let schedules share levels)."""
        ...

    def prune(self, weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], level: int) -> Mask:
        """Level `level`'s mask: what survives of `mask`, ranked on `weights`."""
        ...

    def random_like(self, mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
        """The random-pruning control of `mask`: as much kept, chosen at random."""
        ...

    def report(self, mask: Mapping[str, torch.Tensor], level: int) -> dict[str, Any]:
        """sparsity.json of a level: what `mask` keeps, and the schedule's target."""
        ...


def keep_count(n: int, density: float) -> int:
    """How many of `n` weights a target density keeps: rounded half up, so 0.5 weights keeps one."""
    return int(math.floor(n * density + 0.5))


def _match(patterns: Sequence[str], weight_names: Sequence[str], what: str) -> dict[str, list[str]]:
    """Weights matched by each fnmatch pattern, tried on the layer name (`fc3`, `conv*`) and on the parameter name
    (`fc3.*`); a pattern that matches nothing is a typo and an error."""
    matched = {
        p: [n for n in weight_names if fnmatch.fnmatchcase(layer_of(n), p) or fnmatch.fnmatchcase(n, p)]
        for p in patterns
    }
    missing = [p for p, hits in matched.items() if not hits]
    if missing:
        layers = [layer_of(n) for n in weight_names]
        raise PruningConfigError(f"{what} names {missing}, which match no prunable layer; prunable layers are {layers}")
    return matched


@dataclass(frozen=True)
class PruningPlan:
    """Which layers are pruned, to which density at each level, and whether they compete globally or each alone."""

    scope: str
    rates: dict[str, float | None]  # pruned weight name -> its per-level fraction (None unless a fraction schedule)
    ignored: tuple[str, ...] = field(default_factory=tuple)  # weight names left dense
    schedule: SparsitySchedule = field(default_factory=SparsitySchedule)

    @classmethod
    def build(
        cls,
        weight_names: Sequence[str],
        scope: str,
        fraction: float = 0.2,
        overrides: Mapping[str, float] | None = None,
        ignore: Sequence[str] = (),
        schedule: SparsitySchedule | None = None,
    ) -> PruningPlan:
        if scope not in SCOPES:
            raise PruningConfigError(f"pruning.scope={scope!r} is not one of {SCOPES}")
        if schedule is None:
            fraction = check_fraction(fraction, "pruning.fraction")
            schedule = SparsitySchedule(kind="fraction", fraction=fraction)
        ignored = {n for hits in _match(list(ignore), weight_names, "pruning.ignore").values() for n in hits}
        overrides = dict(overrides or {})
        if overrides and scope == "global":
            raise PruningConfigError(
                f"pruning.overrides={overrides} set per-layer rates, which only layerwise pruning can honour; "
                "use pruning.scope=layerwise, or pruning.ignore to keep layers dense under global pruning"
            )
        if overrides and schedule.kind != "fraction":
            raise PruningConfigError(
                f"pruning.overrides={overrides} are per-level fractions, read by pruning.schedule=fraction only "
                f"(got {schedule.kind!r})"
            )
        base = schedule.fraction if schedule.kind == "fraction" else None
        rates: dict[str, float | None] = {n: base for n in weight_names if n not in ignored}
        for pattern, hits in _match(list(overrides), weight_names, "pruning.overrides").items():
            rate = check_fraction(overrides[pattern], f"pruning.overrides[{pattern!r}]")
            for name in hits:
                if name in rates:
                    rates[name] = rate
        if not rates:
            layers = [layer_of(n) for n in weight_names]
            raise PruningConfigError(f"pruning.ignore={list(ignore)} leaves no layer to prune among {layers}")
        return cls(scope=scope, rates=rates, ignored=tuple(n for n in weight_names if n in ignored), schedule=schedule)

    @property
    def layers(self) -> tuple[str, ...]:
        """The pruned weights, in model order."""
        return tuple(self.rates)

    def layer_density(self, name: str, level: int) -> float:
        """Target density of one layer at `level` (layerwise scope)."""
        return self.schedule.density(level, rate=self.rates[name])

    def global_density(self, level: int) -> float:
        """Target density of all pruned weights together at `level` (global scope has no per-layer rates)."""
        return self.schedule.density(level)

    def report(self, mask: Mapping[str, torch.Tensor], level: int) -> dict:
        """Total and per-layer weights of a level's mask, with the target density beside the density reached (they
        differ by rounding on small layers). Layerwise plans have per-layer targets; global plans a total one."""
        layers = per_layer_counts(mask)
        if self.scope == "layerwise":
            for name in layers:
                layers[name]["target_density"] = self.layer_density(name, level)
            target = sum(m.numel() * self.layer_density(n, level) for n, m in mask.items()) / total(mask)
        else:
            target = self.global_density(level)
        return {
            "total": total(mask),
            "remaining": remaining(mask),
            "density": density(mask),
            "target_density": target,
            "layers": layers,
            "dense_layers": list(self.ignored),
        }

    def keep_counts(self, sizes: Mapping[str, int], level: int) -> dict[str, int]:
        """Exactly how many weights survive at `level`: per layer (layerwise) or in total under the key "*"."""
        if self.scope == "global":
            return {"*": keep_count(sum(sizes[n] for n in self.layers), self.global_density(level))}
        return {n: keep_count(sizes[n], self.layer_density(n, level)) for n in self.layers}

    def prune(self, weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], level: int) -> Mask:
        """Level `level`'s mask: the largest-magnitude surviving weights of `mask` (see `prune`)."""
        return prune(weights, mask, self, level)

    def random_like(self, mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> Mask:
        """As many weights kept in each layer as `mask` keeps, at uniformly random positions."""
        return random_mask_like(mask, generator)


def _stable_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score; equal scores keep their original order (the deterministic tie-break)."""
    return torch.sort(scores, descending=True, stable=True).indices


def magnitude_scores(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|w| for surviving weights, -inf for pruned ones so they can never be chosen again (masks only shrink)."""
    out = {}
    for name, m in mask.items():
        score = weights[name].detach().abs().float().cpu().flatten()
        out[name] = torch.where(m.flatten(), score, torch.tensor(float("-inf")))
    return out


def _keep_top(scores: torch.Tensor, keep: int, alive: int, name: str) -> torch.Tensor:
    if keep > alive:
        raise PruningConfigError(
            f"{name}: the target keeps {keep} weights but only {alive} survive; densities must not grow between levels"
        )
    kept = torch.zeros(scores.numel(), dtype=torch.bool)
    kept[_stable_order(scores)[:keep]] = True
    return kept


def prune(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], plan: PruningPlan, level: int) -> Mask:
    """The level-`level` mask: the largest-magnitude survivors of `mask`, at the plan's target density.

    Only the plan's layers carry a mask; ignored layers have no entry and stay dense.
    """
    if level < 1:
        raise PruningConfigError(f"pruning happens from level 1 on, got level={level}")
    scores = magnitude_scores(weights, {n: mask[n] for n in plan.layers})
    keep = plan.keep_counts({n: mask[n].numel() for n in plan.layers}, level)
    new: Mask = {}
    if plan.scope == "global":
        names = list(plan.layers)
        flat = torch.cat([scores[n] for n in names])
        alive = int(sum(int(mask[n].sum()) for n in names))
        kept = _keep_top(flat, keep["*"], alive, "global pruning")
        offset = 0
        for n in names:
            size = mask[n].numel()
            new[n] = kept[offset : offset + size].view(mask[n].shape)
            offset += size
    else:
        for n, score in scores.items():
            new[n] = _keep_top(score, keep[n], int(mask[n].sum()), n).view(mask[n].shape)
    return new
