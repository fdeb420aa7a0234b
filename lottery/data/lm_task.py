"""Loss and metrics of language modelling on plain text (data=lm_text, lottery/data/lm_text.py): next-token prediction.

Targets are (batch, T), aligned with the inputs: targets[:, t] is the token after inputs[:, t] (inputs[:, t + 1]),
IGNORE at padding and at each window's last position (whose next token the window does not hold). Every scored token
counts once, so accuracy is top-1 next-token accuracy over tokens and the loss the mean next-token negative
log-likelihood in nats (perplexity = exp(loss)); windows of different lengths weigh by their tokens, not equally.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from lottery.data.tasks import IGNORE


def _wide(outputs: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (bf16 autocast) in float32 for the loss; float32 and float64 as they are."""
    return outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()


def context_buckets(length: int) -> list[int]:
    """Starts of the context-length buckets 1, 2-3, 4-7, 8-15, ... up to `length` tokens read."""
    starts, start = [], 1
    while start <= length:
        starts.append(start)
        start *= 2
    return starts


class NextToken:
    kind = "classification"
    token_accuracy = True  # accuracy counts tokens (top-1 next-token accuracy), not windows

    def __init__(self, vocab: int, name: str = "") -> None:
        self.vocab = vocab
        self.name = name  # the text's name in reports: the stem of data.path

    @staticmethod
    def split(y: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(targets, None): no column of per-example context sizes, unlike ExactMatch's shots."""
        return y, None

    def chance(self, y: torch.Tensor) -> float:
        """Guessing a token uniformly from the vocabulary."""
        return 1.0 / self.vocab

    def _token_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(batch, T) negative log-likelihoods of the targets, 0 at unscored positions."""
        return F.cross_entropy(_wide(outputs).transpose(1, 2), y, ignore_index=IGNORE, reduction="none")

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(_wide(outputs).flatten(0, 1), y.flatten(), ignore_index=IGNORE)

    def per_example_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss of each window over its scored tokens."""
        return self._token_losses(outputs, y).sum(1) / (y != IGNORE).sum(1).clamp(min=1)

    def correct(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(batch, T) bool: the most likely token is the next one (False at unscored positions)."""
        return (outputs.argmax(-1) == y) & (y != IGNORE)

    def metrics(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(next-token accuracy, mean next-token loss) over every scored token of the split."""
        outputs = outputs.detach()
        scored = (y != IGNORE).sum().clamp(min=1)
        return float(self.correct(outputs, y).sum() / scored), float(self.loss(outputs, y))

    def by_context(self, outputs: torch.Tensor, y: torch.Tensor) -> dict[str, list]:
        """Accuracy, loss and count of scored tokens by how many tokens of its window the model had read when it
        predicted them, in buckets 1, 2-3, 4-7, ...: "examples" holds each bucket's first length (the text's
        analogue of the in-context examples of a few-shot task)."""
        outputs = outputs.detach()
        valid = y != IGNORE
        hit, losses = self.correct(outputs, y).double(), self._token_losses(outputs, y).double()
        read = torch.arange(1, y.shape[1] + 1, device=y.device).expand_as(y)  # position t has read t + 1 tokens
        out: dict[str, list] = {"examples": [], "acc": [], "loss": [], "count": []}
        for start in context_buckets(y.shape[1]):
            bucket = valid & (read >= start) & (read < 2 * start)
            count = int(bucket.sum())
            if count:
                out["examples"].append(start)
                out["acc"].append(float(hit[bucket].mean()))
                out["loss"].append(float(losses[bucket].mean()))
                out["count"].append(count)
        return out
