"""Training durations written as `500it`, `2ep` or `1ep50it`, as in open_lth.

One value type serves the training length, the rewind point, LR milestones, warm-up and evaluation intervals, so
"rewind to 1ep" means the same step everywhere. Epochs become steps only once the number of steps per epoch is known
(it depends on the dataset and batch size), which is why a Duration keeps both parts until `to_steps`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERN = re.compile(r"^(?:(?P<ep>\d+)ep)?(?:(?P<it>\d+)it)?$")


class DurationError(ValueError):
    """A duration string that cannot be parsed."""


@dataclass(frozen=True, order=True)
class Duration:
    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: str | Duration) -> Duration:
        if isinstance(text, Duration):
            return text
        if not isinstance(text, str):
            raise DurationError(
                f"duration {text!r} is a {type(text).__name__}; write a string such as '500it', '2ep' or '1ep50it'"
            )
        cleaned = text.strip().lower()
        match = _PATTERN.match(cleaned)
        if not cleaned or match is None:
            raise DurationError(
                f"cannot parse duration {text!r}: write iterations as '500it', epochs as '2ep', or both as '1ep50it'"
            )
        return cls(epochs=int(match["ep"] or 0), iterations=int(match["it"] or 0))

    def to_steps(self, steps_per_epoch: int) -> int:
        if steps_per_epoch <= 0:
            raise DurationError(f"steps_per_epoch must be positive to convert {self}, got {steps_per_epoch}")
        return self.epochs * steps_per_epoch + self.iterations

    def __str__(self) -> str:
        if self.epochs and self.iterations:
            return f"{self.epochs}ep{self.iterations}it"
        if self.epochs:
            return f"{self.epochs}ep"
        return f"{self.iterations}it"


def steps(text: str | Duration, steps_per_epoch: int) -> int:
    """Parse `text` and convert it to optimizer steps in one call."""
    return Duration.parse(text).to_steps(steps_per_epoch)
