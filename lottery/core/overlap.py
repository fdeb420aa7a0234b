"""How much two masks agree: Jaccard overlap of the kept weights, what two random masks would give, and whether the
weights both keep had the same sign at the rewind point. These answer "are tickets from different seeds the same?".
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|A and B| / |A or B| of two bool masks (1.0 for two empty masks: they agree on everything)."""
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def expected_random_jaccard(n: int, kept_a: int, kept_b: int) -> float:
    """Jaccard overlap expected of two independent uniformly random masks keeping `kept_a` and `kept_b` of n weights:
    the intersection averages kept_a * kept_b / n, the union is kept_a + kept_b minus that."""
    if n == 0:
        return 1.0
    both = kept_a * kept_b / n
    union = kept_a + kept_b - both
    return both / union if union else 1.0


def sign_agreement(a: torch.Tensor, b: torch.Tensor, kept: torch.Tensor) -> float:
    """Share of the weights kept by both masks whose values in `a` and `b` have the same sign (nan when none)."""
    if not bool(kept.any()):
        return float("nan")
    return float((torch.sign(a[kept]) == torch.sign(b[kept])).float().mean())


def random_mask_like(mask: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A uniformly random mask keeping exactly as many weights in each layer as `mask` does (the random-pruning
    control: same per-layer densities, random positions)."""
    out = {}
    for name, m in mask.items():
        keep = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[:keep]] = True
        out[name] = flat.view(m.shape)
    return out
