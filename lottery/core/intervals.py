"""Intervals over what a study sampled: a cluster bootstrap over the distinct test queries, not over prompts.

A few-shot test split of 40 prompts that cycle over 16 held-out queries is 16 facts asked two or three times, not 40
independent trials: prompts of one query share its answer and succeed or fail together. So the bootstrap resamples
queries (clusters) with replacement, and an accuracy is the hits of the resampled queries' prompts over their count
(Field & Welsh 2007, the cluster bootstrap). Prompts without a query (language-modelling windows, recall sequences)
are clusters of their own.

One set of resampled query counts serves every point of a study, so two points read on the same resamples are
paired: the drop from dense to a pruned model is bounded on the same draws of queries, which is far tighter than two
separate intervals (the queries that are hard for the dense model are hard for the pruned one too).

Pure torch: no Lightning, Hydra or W&B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Resamples:
    """`counts` (draws, clusters): how often each cluster is taken in each bootstrap draw; `cluster` (n,): the
    cluster of each prompt (0..clusters-1)."""

    counts: torch.Tensor
    cluster: torch.Tensor

    @classmethod
    def of(cls, groups: Sequence[int] | torch.Tensor, draws: int, seed: int) -> Resamples:
        """Resamples of the distinct values of `groups` (one per prompt), drawn with a generator seeded by `seed`."""
        groups = torch.as_tensor(groups, dtype=torch.int64)
        if groups.dim() != 1 or len(groups) == 0:
            raise ValueError(f"groups must be one value per prompt, got shape {tuple(groups.shape)}")
        if draws < 1:
            raise ValueError(f"draws={draws} must be >= 1")
        _, cluster = torch.unique(groups, return_inverse=True)
        k = int(cluster.max()) + 1
        gen = torch.Generator().manual_seed(seed)
        picks = torch.randint(0, k, (draws, k), generator=gen)
        counts = torch.zeros(draws, k, dtype=torch.float64).scatter_add_(
            1, picks, torch.ones(draws, k, dtype=torch.float64)
        )
        return cls(counts, cluster)

    @property
    def clusters(self) -> int:
        return self.counts.shape[1]

    def accuracies(self, hits: Sequence[float] | torch.Tensor, tokens: Sequence[int] | torch.Tensor | None = None):
        """Accuracy in every draw (draws,): resampled hits over resampled scored units. `hits` per prompt (1/0 for an
        exact match, a mean over random draws, or correct tokens); `tokens` per prompt (None: one unit each)."""
        hits = torch.as_tensor(hits, dtype=torch.float64)
        units = torch.ones_like(hits) if tokens is None else torch.as_tensor(tokens, dtype=torch.float64)
        if hits.shape != self.cluster.shape or units.shape != self.cluster.shape:
            raise ValueError(f"{len(hits)} hits or {len(units)} counts for {len(self.cluster)} prompts")
        k = self.clusters
        per_hits = torch.zeros(k, dtype=torch.float64).index_add_(0, self.cluster, hits)
        per_units = torch.zeros(k, dtype=torch.float64).index_add_(0, self.cluster, units)
        return (self.counts @ per_hits) / (self.counts @ per_units).clamp(min=1e-12)

    def interval(self, hits, tokens=None, confidence: float = 0.95) -> list[float]:
        """The two-sided percentile interval [low, high] of the accuracy."""
        return percentile_interval(self.accuracies(hits, tokens), confidence)

    def drop_bound(self, reference_hits, hits, tokens=None, confidence: float = 0.95) -> float:
        """The one-sided upper `confidence` bound of (reference accuracy - accuracy), paired on the same draws: a drop
        at most this large is what the sampled queries allow."""
        drops = self.accuracies(reference_hits, tokens) - self.accuracies(hits, tokens)
        return float(torch.quantile(drops, confidence))


def percentile_interval(values: torch.Tensor, confidence: float) -> list[float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95")
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1.0 - tail], dtype=values.dtype)).tolist()
    return [low, high]


def mean_and_spread(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation, min and max of values measured on several splits or seeds."""
    v = torch.tensor([float(x) for x in values], dtype=torch.float64)
    if len(v) == 0:
        raise ValueError("no values to summarise")
    sd = float(v.std(unbiased=True)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max()), "n": len(v)}
