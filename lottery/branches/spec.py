"""What a branch reads of one (config, seed) run: what training reads (lottery/training/spec.py) and the dense mask.
The spine's `Setup` is one; a Protocol for the reason given there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lottery.training.spec import RunSpec

if TYPE_CHECKING:
    from lottery.core import masks as M


class BranchSpec(RunSpec, Protocol):
    def dense_mask(self) -> M.Mask: ...
