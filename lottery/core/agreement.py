"""How well one importance ranking predicts another (a checkpoint's scores against the final network's): Spearman's
rank correlation, the overlap of the k most important units, and what random rankings give for both. Pure tensors.

Spearman with average ranks for ties (a unit scored 0 at two checkpoints ties with the other zeros), the Pearson
correlation of the ranks. The random baseline of Spearman is the `confidence` quantile of |rho| between the final
ranking and random permutations of it (seeded): a correlation above it is more than chance. The random baseline of the
top-k overlap is k / n, its expectation for a random set of k.
"""

from __future__ import annotations

import torch


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a flat tensor, ties given their average rank."""
    v = values.flatten().double()
    order = torch.argsort(v, stable=True)
    sorted_v = v[order]
    out = torch.empty_like(v)
    i, n = 0, len(v)
    while i < n:
        j = i
        while j + 1 < n and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        out[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho of two score tensors of the same units (nan when either is constant)."""
    if a.numel() != b.numel():
        raise ValueError(f"rankings of {a.numel()} and {b.numel()} units cannot be compared")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else float("nan")


def top_k(values: torch.Tensor, k: int) -> set[int]:
    """The indices of the k highest scores (ties: the lower index)."""
    return set(torch.argsort(values.flatten().double(), descending=True, stable=True)[:k].tolist())


def top_k_overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    """The share of b's k most important units that a also puts in its k most important."""
    if not 0 < k <= b.numel():
        raise ValueError(f"k={k} must lie in [1, {b.numel()}]")
    return len(top_k(a, k) & top_k(b, k)) / k


def random_spearman(reference: torch.Tensor, draws: int, seed: int, confidence: float = 0.95) -> float:
    """The `confidence` quantile of |rho| between `reference` and random permutations of it."""
    gen = torch.Generator().manual_seed(seed)
    flat = reference.flatten()
    values = [abs(spearman(flat[torch.randperm(len(flat), generator=gen)], flat)) for _ in range(draws)]
    values = [v for v in values if v == v]  # a constant reference gives nan
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), confidence)) if values else float("nan")


def agreement(point: torch.Tensor, final: torch.Tensor, seed: int, top: float = 0.25, draws: int = 1000) -> dict:
    """Spearman and top-k overlap (k: the `top` share of the units, at least one) of `point` against `final`, beside
    what random rankings give."""
    n = final.numel()
    k = max(1, int(n * top))
    return {
        "spearman": spearman(point, final),
        "spearman_random": random_spearman(final, draws, seed),
        "top_k": k,
        "top_k_overlap": top_k_overlap(point, final, k),
        "top_k_random": k / n,
        "units": n,
    }
