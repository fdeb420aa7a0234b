"""Masks: a plain dict from a weight's parameter name ("fc1.weight") to a bool tensor of the same shape.

Deliberately not torch.nn.utils.prune: that re-multiplies before every forward, renames state-dict keys to
`weight_orig`/`weight_mask` and breaks deepcopy. Here the weights themselves hold exact zeros, state dicts stay plain,
and a mask is a file that `torch.load(..., weights_only=True)` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

Mask = dict[str, torch.Tensor]

# Layers whose `weight` is prunable by default: the affine maps. Biases and norm layers stay dense (LTH convention).
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class MaskMismatchError(ValueError):
    """A mask whose layer names or shapes do not fit the weights it is applied to."""


def layer_of(param_name: str) -> str:
    """`fc1.weight` -> `fc1`: config patterns (ignore list, per-layer rates) name layers, masks name parameters."""
    return param_name.removesuffix(".weight")


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weight of every Linear/Conv layer, keyed by parameter name, in module order; or, for a model that names
    its own (`model.prunable_weights()`, e.g. a Hugging Face LM whose GPT-2 projections are not nn.Linear), those."""
    own = getattr(model, "prunable_weights", None)
    if callable(own):
        return dict(own())
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and module.weight is not None
    }


def dense_mask(weights: Mapping[str, torch.Tensor | tuple[int, ...]]) -> Mask:
    """Level 0's mask: every entry kept, on the CPU, for weights given as tensors or as shapes."""
    return {
        name: torch.ones(tuple(w.shape) if isinstance(w, torch.Tensor) else tuple(w), dtype=torch.bool)
        for name, w in weights.items()
    }


def remaining(mask: Mapping[str, torch.Tensor]) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def total(mask: Mapping[str, torch.Tensor]) -> int:
    return int(sum(m.numel() for m in mask.values()))


def density(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of the masked weights that survive (1.0 for a dense mask)."""
    return remaining(mask) / max(total(mask), 1)


def check_compatible(
    mask: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor], source: str = "mask"
) -> None:
    """Raise MaskMismatchError naming the offending layers when `mask` does not fit `weights`."""
    unknown = sorted(set(mask) - set(weights))
    if unknown:
        raise MaskMismatchError(
            f"{source} names layers the model does not have: {unknown}; model layers are {sorted(weights)}. "
            "Was it made for another model or width? Use the mask from a run of the same configuration."
        )
    for name, m in mask.items():
        if m.dtype != torch.bool:
            raise MaskMismatchError(f"{source}[{name!r}] has dtype {m.dtype}; masks must be bool tensors")
        if tuple(m.shape) != tuple(weights[name].shape):
            raise MaskMismatchError(
                f"{source}[{name!r}] has shape {tuple(m.shape)} but the weight has shape {tuple(weights[name].shape)}"
            )


def is_subset(inner: Mapping[str, torch.Tensor], outer: Mapping[str, torch.Tensor]) -> bool:
    """True when every weight kept by `inner` is also kept by `outer` (IMP masks only ever shrink)."""
    return all(not bool((inner[k] & ~outer[k]).any()) for k in inner)


def pruned_entries(
    weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bool tensor of its pruned entries, on the weight's device) for each layer with any pruned entry.
    Built once per level by the training loop, which then zeroes them after every optimizer step (`zero_`)."""
    return [(weights[n], ~m.to(weights[n].device)) for n, m in mask.items() if not bool(m.all())]


@torch.no_grad()
def zero_(pruned: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Zero the pruned entries in place: one masked fill per tensor (a fill rather than a multiply, so a pruned entry
    is exactly zero even if it held inf or nan)."""
    for w, dead in pruned:
        w.masked_fill_(dead, 0)


def apply_(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked entries in place, skipping layers the mask keeps whole."""
    zero_(pruned_entries(weights, mask))


def masked_state_dict(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], prefix: str = "") -> dict:
    """A copy of `state` with each masked weight (key `prefix + name`) multiplied by its mask."""
    out = dict(state)
    for name, m in mask.items():
        key = prefix + name
        if key not in out:
            raise MaskMismatchError(f"mask layer {name!r} has no entry {key!r} in the state dict")
        w = out[key]
        out[key] = w.masked_fill(~m.to(w.device), 0)
    return out


def per_layer_counts(mask: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    return {
        name: {"total": m.numel(), "remaining": int(m.sum()), "density": int(m.sum()) / max(m.numel(), 1)}
        for name, m in mask.items()
    }
