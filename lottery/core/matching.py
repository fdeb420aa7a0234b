"""When a sparser network still "matches" the dense one: the one definition every report uses.

Walking levels from dense to sparse (or unit removals from few to many), a level matches while its accuracy is at
most `tolerance` below the dense accuracy; the lowest matching density is that of the last level of the unbroken run
of matching levels, so it and every denser level match (a lucky level after a failed one does not count). A NaN
accuracy (a level with no evaluation) ends the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")
EPS = 1e-12


def last_matching(points: Iterable[tuple[T, float]], reference: float, tolerance: float) -> T | None:
    """The last item of the leading run of `points` (item, accuracy), in the order given (dense first), whose
    accuracy is within `tolerance` of `reference`; None when the first already falls short."""
    last = None
    for item, acc in points:
        # EPS: a drop of exactly the tolerance (30/40 - 28/40 = 0.05000000000000004 in floats) matches
        if not acc >= reference - tolerance - EPS:
            break
        last = item
    return last
