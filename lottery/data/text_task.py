"""Loss and metrics of the few-shot text tasks (lottery/data/text_icl.py): exact match of the answer's tokens.

Targets are (batch, T + 1): columns 0..T-1 hold the answer's tokens at the positions that predict them (IGNORE
elsewhere), column T the prompt's number of demonstrations k, which `by_context` groups by. A prompt counts as correct
when the most likely token is the right one at every answer position (teacher forcing: the answer's earlier tokens
are given), which for a one-token answer is greedy decoding's exact match.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lottery.data.tasks import IGNORE


def _wide(outputs: torch.Tensor) -> torch.Tensor:
    return outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()


class ExactMatch:
    kind = "classification"
    token_accuracy = False  # accuracy counts whole prompts (every answer token right), not tokens

    def __init__(
        self, n_answers: int, distinct_queries: int | None = None, name: str = "", test_queries: list[int] | None = None
    ) -> None:
        self.n_answers = n_answers
        # How many different test queries the test prompts ask (each is asked about equally often): an accuracy
        # over 200 prompts that ask 17 queries is 17 facts, not 200, which a report should say.
        self.distinct_queries = distinct_queries
        self.name = name  # the task's name in reports: data.task, or the stem of data.task_file
        # Which held-out query each test prompt asks (an index into the held-out pairs): intervals resample these
        # queries, not prompts (lottery/core/intervals.py). None: every prompt is its own query.
        self.test_queries = test_queries

    @staticmethod
    def split(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y[:, :-1], y[:, -1]

    def chance(self, y: torch.Tensor) -> float:
        """Guessing one of the task's distinct answers."""
        return 1.0 / self.n_answers

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets, _ = self.split(y)
        return F.cross_entropy(_wide(outputs).flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    def per_example_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets, _ = self.split(y)
        losses = F.cross_entropy(_wide(outputs).transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        return losses.sum(1) / (targets != IGNORE).sum(1).clamp(min=1)

    def correct(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        targets, _ = self.split(y)
        valid = targets != IGNORE
        return ((outputs.argmax(-1) == targets) | ~valid).all(1)

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        outputs = outputs.detach()
        return float(self.correct(outputs, y).float().mean()), float(self.loss(outputs, y))

    def by_context(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
        """Accuracy, loss and count per number of demonstrations k."""
        outputs = outputs.detach()
        _, shots = self.split(y)
        hit, losses = self.correct(outputs, y).double(), self.per_example_loss(outputs, y).double()
        ks = sorted(set(shots.tolist()))
        return {
            "examples": ks,
            "acc": [float(hit[shots == k].mean()) for k in ks],
            "loss": [float(losses[shots == k].mean()) for k in ks],
            "count": [int((shots == k).sum()) for k in ks],
        }
