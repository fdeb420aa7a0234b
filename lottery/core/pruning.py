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

import torch

from lottery.core.masks import Mask, layer_of

SCOPES = ("global", "layerwise")


class PruningConfigError(ValueError):
    """A pruning setting that cannot be honoured (bad fraction, unknown layer, contradictory options)."""


def keep_count(n: int, density: float) -> int:
    """How many of `n` weights a target density keeps: rounded half up, so 0.5 weights keeps one."""
    return int(math.floor(n * density + 0.5))


def check_fraction(value: float, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 < float(value) < 1.0:
        raise PruningConfigError(
            f"{what}={value!r} is not a fraction in (0, 1): it is the share of the *remaining* weights pruned per "
            "level, e.g. 0.2"
        )
    return float(value)


def _match(patterns: Sequence[str], layers: Sequence[str], what: str) -> dict[str, list[str]]:
    """Layers matched by each fnmatch pattern; a pattern that matches nothing is a typo and an error."""
    matched = {p: [name for name in layers if fnmatch.fnmatchcase(name, p)] for p in patterns}
    missing = [p for p, hits in matched.items() if not hits]
    if missing:
        raise PruningConfigError(
            f"{what} names {missing}, which match no prunable layer; prunable layers are {list(layers)}"
        )
    return matched


@dataclass(frozen=True)
class PruningPlan:
    """Which layers are pruned, how hard, and whether they compete globally or each on its own."""

    scope: str
    rates: dict[str, float]  # parameter name -> fraction of remaining weights pruned per level
    ignored: tuple[str, ...] = field(default_factory=tuple)  # parameter names left dense

    @classmethod
    def build(
        cls,
        weight_names: Sequence[str],
        scope: str,
        fraction: float,
        overrides: Mapping[str, float] | None = None,
        ignore: Sequence[str] = (),
    ) -> PruningPlan:
        if scope not in SCOPES:
            raise PruningConfigError(f"pruning.scope={scope!r} is not one of {SCOPES}")
        fraction = check_fraction(fraction, "pruning.fraction")
        layers = [layer_of(n) for n in weight_names]
        ignored_layers = {name for hits in _match(list(ignore), layers, "pruning.ignore").values() for name in hits}
        overrides = dict(overrides or {})
        if overrides and scope == "global":
            raise PruningConfigError(
                f"pruning.overrides={overrides} set per-layer rates, which only layerwise pruning can honour; "
                "use pruning.scope=layerwise, or pruning.ignore to keep layers dense under global pruning"
            )
        per_layer = {name: fraction for name in layers if name not in ignored_layers}
        for pattern, hits in _match(list(overrides), layers, "pruning.overrides").items():
            rate = check_fraction(overrides[pattern], f"pruning.overrides[{pattern!r}]")
            for name in hits:
                if name in per_layer:
                    per_layer[name] = rate
        if not per_layer:
            raise PruningConfigError(f"pruning.ignore={list(ignore)} leaves no layer to prune among {layers}")
        rates = {n: per_layer[layer_of(n)] for n in weight_names if layer_of(n) in per_layer}
        ignored = tuple(n for n in weight_names if layer_of(n) in ignored_layers)
        return cls(scope=scope, rates=rates, ignored=ignored)

    def layer_density(self, name: str, level: int) -> float:
        """Target density of a layer at `level` under a fixed per-level rate: (1 - rate) ** level."""
        return (1.0 - self.rates[name]) ** level

    def global_density(self, level: int) -> float:
        (rate,) = set(self.rates.values())  # global scope has one rate (overrides are refused in build)
        return (1.0 - rate) ** level


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
    scores = magnitude_scores(weights, {n: mask[n] for n in plan.rates})
    new: Mask = {}
    if plan.scope == "global":
        names = list(plan.rates)
        flat = torch.cat([scores[n] for n in names])
        alive = int(sum(int(mask[n].sum()) for n in names))
        keep = keep_count(flat.numel(), plan.global_density(level))
        kept = _keep_top(flat, keep, alive, "global pruning")
        offset = 0
        for n in names:
            size = mask[n].numel()
            new[n] = kept[offset : offset + size].view(mask[n].shape)
            offset += size
    else:
        for n, score in scores.items():
            keep = keep_count(score.numel(), plan.layer_density(n, level))
            new[n] = _keep_top(score, keep, int(mask[n].sum()), n).view(mask[n].shape)
    return new
