"""Linear mode connectivity (Frankle et al. 2020): the straight line between two trained networks and its error
barrier, in pure torch.

Two copies of a network trained from the same point with different SGD noise are *linearly connected* when the test
error along theta(alpha) = (1 - alpha) * theta_a + alpha * theta_b stays near the error of the endpoints. The error
barrier (the paper's "instability") is the largest rise of the error along the path above the mean of the two
endpoints' errors; the paper calls a network stable when it is under 2% (2 points of error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def alphas(points: int) -> list[float]:
    """`points` evenly spaced interpolation coefficients from 0 to 1, both endpoints included (the paper uses 30)."""
    if points < 2:
        raise ValueError(f"instability.points={points} must be at least 2 (the two endpoints); the paper uses 30")
    return [i / (points - 1) for i in range(points)]


def interpolate(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b for every floating-point tensor of two state dicts of the same network.

    Written as a weighted sum rather than torch.lerp (a + alpha * (b - a)) so that alpha = 0 and alpha = 1 reproduce
    the endpoints bit for bit. Integer buffers (BatchNorm's num_batches_tracked) are taken from `a`; weights both
    networks prune are zero in both, so they stay zero on the whole path.
    """
    if set(state_a) != set(state_b):
        raise ValueError(f"the two networks differ in their tensors: {sorted(set(state_a) ^ set(state_b))}")
    out = {}
    for name, a in state_a.items():
        b = state_b[name]
        if a.shape != b.shape:
            raise ValueError(f"{name} has shape {tuple(a.shape)} in one network and {tuple(b.shape)} in the other")
        out[name] = (1.0 - alpha) * a + alpha * b if a.is_floating_point() else a.clone()
    return out


def error_barrier(errors: Sequence[float]) -> float:
    """max_alpha E(alpha) - (E(0) + E(1)) / 2 over errors measured at alphas(len(errors)); never negative, because
    the endpoints themselves are on the path."""
    if len(errors) < 2:
        raise ValueError(f"an error barrier needs the errors at both endpoints at least; got {len(errors)} values")
    return max(errors) - (errors[0] + errors[-1]) / 2
