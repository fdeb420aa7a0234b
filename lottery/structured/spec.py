"""What a structured run's stages read of one (config, seed) run: what training reads (lottery/training/spec.py) and
the pretrained network as loaded. The spine's `Setup` is one; a Protocol for the reason given there."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from lottery.training.spec import RunSpec

if TYPE_CHECKING:
    import torch


class StructuredSpec(RunSpec, Protocol):
    def pretrained(self) -> torch.nn.Module: ...
