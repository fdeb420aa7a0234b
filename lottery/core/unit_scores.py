"""Importance scores of structured units that need no model run: weight magnitude. (The gradient importance of
Michel et al. 2019, which Bansal et al. 2023 use to prune heads and feed-forward networks of OPT-66B, runs the model:
lottery/structured/probe.py measures it, for every network, with the study's one evaluator.)

    magnitude  the L2 norm of the unit's weights: a head's rows of q, k, v and columns of o; a hidden unit's row of
               fc_in and column of fc_out; a block's fc_in and fc_out
    gradient   I_u = mean over prompts x of |<dL(x)/dA_u(x), A_u(x)>| (Probe.gradient_scores)

Scores rank units of one kind against each other; scores of different kinds are not comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

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
