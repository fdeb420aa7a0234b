"""Importance scores of structured units: weight magnitude, and the gradient importance of Michel et al. 2019, which
Bansal et al. 2023 use to prune heads and feed-forward networks of OPT-66B.

    magnitude  the L2 norm of the unit's weights: a head's rows of q, k, v and columns of o; a hidden unit's row of
               fc_in and column of fc_out; a block's fc_in and fc_out
    gradient   I_u = mean over prompts x of |<dL(x)/dA_u(x), A_u(x)>|, A_u the unit's output (a head's attention
               output, a hidden unit's activation, a block's output) summed over positions. The model multiplies A_u by
               a gate g_u; at g = 1, dL/dg_u is exactly that inner product, so one backward pass with one gate per
               prompt and unit gives every prompt's term at once.

Scores rank units of one kind against each other; scores of different kinds are not comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from lottery.core.units import UnitLayout

SCORES = ("magnitude", "gradient")


def magnitude_scores(
    weights: Mapping[str, torch.Tensor], layout: UnitLayout, kinds: Sequence[str]
) -> dict[str, torch.Tensor]:
    squares = {}
    out = {}
    for kind in kinds:
        norms = []
        for unit in layout.slices[kind]:
            total = 0.0
            for s in unit:
                if s.weight not in squares:
                    squares[s.weight] = weights[s.weight].detach().double().cpu().pow(2)
                total += float(squares[s.weight][s.index()].sum())
            norms.append(total**0.5)
        out[kind] = torch.tensor(norms, dtype=torch.float64).view(layout.grids[kind])
    return out


def gradient_scores(
    model: nn.Module,
    per_example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    layout: UnitLayout,
    kinds: Sequence[str],
) -> dict[str, torch.Tensor]:
    """I_u averaged over every prompt of `batches`. `model(x, gates={kind: (batch, *grid)})` must multiply each unit's
    output by its gate (lottery.models.Transformer does); `per_example_loss(outputs, y)` returns one loss per prompt.
    The model is put in eval mode for the duration and its parameters' .grad are left untouched."""
    was_training = model.training
    model.eval()
    sums = {k: torch.zeros(layout.grids[k], dtype=torch.float64) for k in kinds}
    seen = 0
    try:
        for x, y in batches:
            device = x.device
            gates = {k: torch.ones((len(x), *layout.grids[k]), device=device, requires_grad=True) for k in kinds}
            losses = per_example_loss(model(x, gates=gates), y)
            if losses.shape != (len(x),):
                raise ValueError(f"per_example_loss returned shape {tuple(losses.shape)}, expected ({len(x)},)")
            grads = torch.autograd.grad(losses.sum(), [gates[k] for k in kinds])
            for kind, grad in zip(kinds, grads, strict=True):
                sums[kind] += grad.detach().abs().sum(0).double().cpu()
            seen += len(x)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("gradient_scores got no prompts to score on")
    return {k: s / seen for k, s in sums.items()}
