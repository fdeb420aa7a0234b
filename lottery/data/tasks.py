"""Losses and metrics of sequence tasks, the hook through which LevelModule trains in-context learning prompts.

A level trains image-style classification (cross-entropy and accuracy on one label per example) unless its data
carries a task (`Splits.task`). A task scores outputs of shape (batch, T, out) against targets of shape (batch, T)
where only some positions are supervised (the query positions of a prompt):

    loss(outputs, y)              the training loss, a mean over every supervised position of the batch
    per_example_loss(outputs, y)  one loss per prompt (the mean over its supervised positions), for gradient scores
    metrics(outputs, y)           (accuracy, loss) over a whole split: the numbers tickets and reports compare
    by_context(outputs, y)        accuracy, loss and count per number of in-context examples before the query

Query positions are the even positions 2i of a prompt (x_1 y_1 x_2 y_2 ... or k_1 v_1 k_2 v_2 ...), each with i
complete examples before it, so `by_context` reads position 2i as "i in-context examples".
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.nn import functional as F

IGNORE = -100  # unsupervised positions of a token task (cross_entropy's ignore_index)


class Task(Protocol):
    kind: str  # "classification" or "regression"

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def per_example_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]: ...

    def by_context(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, list]: ...

    def chance(self, y: torch.Tensor) -> float: ...


def _wide(outputs: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (bf16 autocast) in float32 for the loss; float32 and float64 as they are."""
    return outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()


def _per_position(values: torch.Tensor, valid: torch.Tensor) -> dict[str, list]:
    """Mean of `values` over valid entries at each query position 2i, with i = the number of in-context examples."""
    values, valid = values[:, 0::2].double(), valid[:, 0::2]
    count = valid.sum(0)
    mean = torch.where(valid, values, 0).sum(0) / count.clamp(min=1)
    keep = count > 0
    return {
        "examples": torch.arange(len(count))[keep].tolist(),
        "value": mean[keep].tolist(),
        "count": count[keep].tolist(),
    }


class TokenRecall:
    """Next-token prediction of the value tokens at query positions (associative recall): cross-entropy over the
    vocabulary; accuracy is the share of queries whose most likely token is the right value."""

    kind = "classification"
    token_accuracy = True  # accuracy over scored tokens (lottery/structured/probe.py)

    def __init__(self, n_values: int) -> None:
        self.n_values = n_values

    def chance(self, y: torch.Tensor) -> float:
        """Guessing among the values: each query's value is uniform over them."""
        return 1.0 / self.n_values

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.flatten(0, 1), y.flatten(), ignore_index=IGNORE)

    def per_example_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        losses = F.cross_entropy(_wide(outputs).transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
        valid = y != IGNORE
        return losses.sum(1) / valid.sum(1).clamp(min=1)

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        outputs = outputs.detach()
        valid = y != IGNORE
        correct = outputs.argmax(-1)[valid] == y[valid]
        return float(correct.float().mean()), float(self.loss(_wide(outputs), y))

    def hits(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per prompt: right queries and queries (what an interval over prompts resamples)."""
        valid = y != IGNORE
        return ((outputs.argmax(-1) == y) & valid).sum(1), valid.sum(1)

    def by_context(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
        valid = y != IGNORE
        correct = (outputs.argmax(-1) == y).float()
        losses = F.cross_entropy(_wide(outputs).transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
        acc, loss = _per_position(correct, valid), _per_position(losses, valid)
        return {"examples": acc["examples"], "acc": acc["value"], "loss": loss["value"], "count": acc["count"]}


class Regression:
    """Scalar prediction at query positions (in-context linear regression, Garg et al. 2022). The loss is the
    normalised squared error (prediction - y)^2 / n_dims (Garg et al.'s metric: 1.0 is what predicting 0 scores, as
    Var(y) = n_dims); accuracy is the share of queries whose normalised squared error is below `tolerance`."""

    kind = "regression"

    def __init__(self, n_dims: int, tolerance: float) -> None:
        self.n_dims, self.tolerance = n_dims, tolerance

    def _nse(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = ~torch.isnan(y)
        # NaN targets are replaced before the arithmetic: a NaN would poison the gradient even behind a mask.
        target = torch.where(valid, y, torch.zeros_like(y))
        return (_wide(outputs)[..., 0] - target).pow(2) / self.n_dims, valid

    def chance(self, y: torch.Tensor) -> float:
        """The accuracy of always predicting 0 (the mean of y), on the queries of `y`."""
        return self.metrics(torch.zeros((*y.shape, 1)), y)[0]

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nse, valid = self._nse(outputs, y)
        return nse[valid].mean()

    def per_example_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nse, valid = self._nse(outputs, y)
        return torch.where(valid, nse, 0).sum(1) / valid.sum(1).clamp(min=1)

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        nse, valid = self._nse(outputs.detach(), y)
        return float((nse[valid] < self.tolerance).float().mean()), float(nse[valid].mean())

    def hits(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per prompt: queries within tolerance and queries (what an interval over prompts resamples)."""
        nse, valid = self._nse(outputs.detach(), y)
        return ((nse < self.tolerance) & valid).sum(1), valid.sum(1)

    def by_context(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
        nse, valid = self._nse(outputs, y)
        acc, loss = _per_position((nse < self.tolerance).float(), valid), _per_position(nse, valid)
        return {"examples": acc["examples"], "acc": acc["value"], "loss": loss["value"], "count": acc["count"]}
