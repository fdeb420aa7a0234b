"""Weight-level sparsity without retraining: which weights of a trained matrix to zero, by score and pattern, at
exact densities. Pure tensors (no model, no Lightning): lottery/structured/weights.py runs the model for Wanda's
input norms and evaluates the result.

Scores of a weight matrix W (out, in), the convention of torch.nn.Linear:

    magnitude  |W_ij|: the lottery-ticket score (Frankle & Carbin 2019), compared across the whole matrix, as the
               magnitude baseline of Sun et al. 2023 prunes each layer (their lib/prune.py, prune_magnitude)
    wanda      |W_ij| * ||X_j||_2, X_j input feature j over the calibration tokens, compared within each output row
               (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"; prune_wanda)
    random     uniform noise from a fixed seed, compared across the matrix: the control

Patterns: unstructured (a `fraction` of each matrix, or of each row, removed: floor(n * fraction) weights, the count
their code takes, so a density is exact and the same in every matrix of a shape), and N:M (in every group of M
consecutive inputs of a row, the N highest scores kept: 2:4 is the pattern sparse tensor cores run; exactly N/M).
Of tied scores the lower index is removed first (a stable sort), so a mask is a function of the scores alone (OPT's
ReLU leaves inputs that are 0 on every calibration token: their Wanda scores tie at 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

SCORES = ("magnitude", "wanda", "random")
WITHIN = {"magnitude": "matrix", "wanda": "row", "random": "matrix"}  # where a score's weights are compared
PATTERN = re.compile(r"^(\d+):(\d+)$")


def wanda_scores(weight: torch.Tensor, input_sq_sum: torch.Tensor) -> torch.Tensor:
    """|W| * ||X_j||_2 for W (out, in) and input_sq_sum (in,), the sum over calibration tokens of each input feature's
    square (any positive scaling of it ranks the same within a row)."""
    if input_sq_sum.shape != weight.shape[1:]:
        raise ValueError(f"input norms of shape {tuple(input_sq_sum.shape)} for a weight of {tuple(weight.shape)}")
    return weight.detach().abs().double() * input_sq_sum.double().sqrt()[None, :]


def pruned_count(n: int, fraction: float) -> int:
    """How many of `n` weights a fraction removes: floor(n * fraction), as Sun et al.'s code counts (int(n * s))."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"a fraction of weights removed must lie in [0, 1), got {fraction}")
    return int(n * fraction)


def _keep_highest(scores: torch.Tensor, remove: int) -> torch.Tensor:
    """Along the last dimension: True everywhere but the `remove` lowest scores (ties: the lower index goes first)."""
    order = torch.sort(scores, dim=-1, stable=True).indices
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep.scatter_(-1, order[..., :remove], False)
    return keep


def unstructured_mask(scores: torch.Tensor, fraction: float, within: str = "matrix") -> torch.Tensor:
    """The kept weights (True) of a (out, in) score matrix with `fraction` of them removed, the lowest scores first,
    compared across the matrix or within each row."""
    if scores.dim() != 2:
        raise ValueError(f"weight scores must be a matrix (out, in), got shape {tuple(scores.shape)}")
    if within == "row":
        return _keep_highest(scores, pruned_count(scores.shape[1], fraction))
    if within == "matrix":
        return _keep_highest(scores.flatten(), pruned_count(scores.numel(), fraction)).view(scores.shape)
    raise ValueError(f"within={within!r} is not one of matrix, row")


def parse_pattern(pattern: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): N kept of every M."""
    match = PATTERN.match(pattern)
    n, m = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not match or not 0 < n < m:
        raise ValueError(f"{pattern!r} is not an N:M pattern with 0 < N < M, e.g. '2:4' (2 kept of every 4)")
    return n, m


def n_m_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The kept weights of a (out, in) score matrix: in every group of `m` consecutive inputs of a row, the `n` highest
    scores (Sun et al. 2023 and Mishra et al. 2021 group along the input dimension)."""
    out, width = scores.shape
    if width % m:
        raise ValueError(f"a weight with {width} inputs cannot be cut into groups of {m}: {n}:{m} needs a multiple")
    groups = scores.reshape(out, width // m, m)
    return _keep_highest(groups, m - n).reshape(out, width)


def mask_for(scores: torch.Tensor, score: str, pattern: str, fraction: float | None = None) -> torch.Tensor:
    """One matrix's kept weights for a score name (where it compares, WITHIN) and a pattern: 'unstructured' at
    `fraction` removed, or 'N:M'."""
    if pattern == "unstructured":
        if fraction is None:
            raise ValueError("an unstructured mask needs the fraction of weights removed")
        return unstructured_mask(scores, fraction, WITHIN[score])
    return n_m_mask(scores, *parse_pattern(pattern))


def density(masks: Mapping[str, torch.Tensor]) -> float:
    """The fraction of weights kept over every masked matrix together."""
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)
