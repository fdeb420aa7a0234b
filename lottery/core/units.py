"""Structured masks: whole attention heads, MLP hidden units and MLP blocks, in the same abstraction as weight masks.

A unit mask is `{kind: bool tensor over the kind's grid}`: `heads` (layers, heads), `mlp_units` (layers, d_mlp),
`mlp_blocks` (layers,) and, for models that say which weights a whole decoder block owns, `layers` (layers,). A
`UnitLayout` says which weight slices each unit owns: a head its rows of q, k, v and its columns of o; an MLP hidden
unit its row of fc_in and column of fc_out; an MLP block all of fc_in and fc_out. Each model with units builds its own
layout (lottery/models/transformer.py `layout`).

`expand` turns a unit mask into a plain weight Mask (lottery/core/masks.py), so structured pruning reuses everything
weight pruning has: the masked fill after each optimizer step, rewinding, checkpoints and mask.pt files. `contract`
reads the unit mask back from a weight mask: a unit survives while any of its weights does, so a unit is removed
exactly when all its weights are masked (and removing every hidden unit of a block removes the block).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from lottery.core.masks import Mask

KINDS = ("heads", "mlp_units", "mlp_blocks", "layers")  # layers: whole decoder blocks (pretrained models)
UnitMask = dict[str, torch.Tensor]


class UnitConfigError(ValueError):
    """A structured-pruning request that cannot be honoured; the message names the value and the fix."""


@dataclass(frozen=True)
class Slice:
    """A contiguous range of one weight: rows (dim 0, output features) or columns (dim 1, input features)."""

    weight: str
    dim: int
    start: int
    stop: int

    def index(self) -> tuple[slice, ...]:
        span = slice(self.start, self.stop)
        return (span,) if self.dim == 0 else (slice(None), span)


@dataclass(frozen=True)
class UnitLayout:
    grids: dict[str, tuple[int, ...]]  # kind -> shape of its unit grid; the first axis is always the layer
    slices: dict[str, tuple[tuple[Slice, ...], ...]]  # kind -> each unit's slices, units in row-major grid order

    def size(self, kind: str) -> int:
        return len(self.slices[kind])


def full_units(layout: UnitLayout, kinds: tuple[str, ...] | None = None) -> UnitMask:
    return {k: torch.ones(layout.grids[k], dtype=torch.bool) for k in (kinds or tuple(layout.grids))}


def expand(units: Mapping[str, torch.Tensor], layout: UnitLayout, shapes: Mapping[str, tuple[int, ...]]) -> Mask:
    """The weight mask of `units` over the weights in `shapes` (all of them, dense where no removed unit reaches)."""
    mask = {name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()}
    for kind, alive in units.items():
        if tuple(alive.shape) != layout.grids[kind]:
            raise UnitConfigError(
                f"unit mask {kind!r} has shape {tuple(alive.shape)}, the model's is {layout.grids[kind]}"
            )
        for i in torch.nonzero(~alive.flatten()).flatten().tolist():
            for s in layout.slices[kind][i]:
                if s.weight not in mask:
                    raise UnitConfigError(f"unit {kind}[{i}] owns {s.weight!r}, which is not among the masked weights")
                mask[s.weight][s.index()] = False
    return mask


def contract(mask: Mapping[str, torch.Tensor], layout: UnitLayout, kinds: tuple[str, ...] | None = None) -> UnitMask:
    """The unit mask a weight mask implies: a unit survives while any of its weights survives."""
    out = {}
    for kind in kinds or tuple(layout.grids):
        alive = [
            any(bool(mask[s.weight][s.index()].any()) if s.weight in mask else True for s in unit)
            for unit in layout.slices[kind]
        ]
        out[kind] = torch.tensor(alive, dtype=torch.bool).view(layout.grids[kind])
    return out


def counts(units: Mapping[str, torch.Tensor]) -> dict[str, dict[str, object]]:
    """Per kind: units in total, surviving, their share, and the survivors per layer."""
    return {
        kind: {
            "total": alive.numel(),
            "remaining": int(alive.sum()),
            "density": int(alive.sum()) / max(alive.numel(), 1),
            "per_layer": alive.reshape(alive.shape[0], -1).sum(1).tolist(),
        }
        for kind, alive in units.items()
    }


def keep_top(
    scores: Mapping[str, torch.Tensor],
    alive: Mapping[str, torch.Tensor],
    keep: Mapping[str, int | list[int]],
    scope: str = "global",
) -> UnitMask:
    """Keep the `keep[kind]` highest-scoring surviving units of each kind: one ranking over all layers (`global`, keep
    is a count) or one per layer (`layerwise`, keep is a list with a count per layer). Removed units never come back;
    equal scores keep the earlier unit (a stable sort), so the same scores always give the same mask."""
    out = {}
    for kind, score in scores.items():
        live = alive[kind]
        ranked = torch.where(live, score.detach().double().cpu(), torch.tensor(float("-inf"), dtype=torch.float64))
        rows = ranked.reshape(1, -1) if scope == "global" else ranked.reshape(ranked.shape[0], -1)
        live_rows = live.reshape(rows.shape)
        target = keep[kind]
        targets = [target] if isinstance(target, int) else list(target)
        if len(targets) != rows.shape[0]:
            raise UnitConfigError(f"{kind}: scope={scope!r} needs {rows.shape[0]} keep counts, got {target!r}")
        kept = torch.zeros(rows.shape, dtype=torch.bool)
        for r, count in enumerate(targets):
            if count > int(live_rows[r].sum()):
                raise UnitConfigError(
                    f"{kind}: the target keeps {count} units but only {int(live_rows[r].sum())} survive; "
                    "unit densities must not grow between levels"
                )
            kept[r, torch.sort(rows[r], descending=True, stable=True).indices[:count]] = True
        out[kind] = kept.view(live.shape)
    return out


def random_scores(layout: UnitLayout, kinds: tuple[str, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Uniform random scores: ranking by them removes units at random (the random-removal control)."""
    return {k: torch.rand(layout.grids[k], generator=generator) for k in kinds}


def random_like(units: Mapping[str, torch.Tensor], scope: str, generator: torch.Generator) -> UnitMask:
    """Random units, as many per kind (`global`) or per layer (`layerwise`) as `units` keeps, drawn from all units."""
    scores = {k: torch.rand(a.shape, generator=generator) for k, a in units.items()}
    everything = {k: torch.ones_like(a) for k, a in units.items()}
    keep: dict[str, int | list[int]] = {
        k: int(a.sum()) if scope == "global" else a.reshape(a.shape[0], -1).sum(1).tolist() for k, a in units.items()
    }
    return keep_top(scores, everything, keep, scope)
