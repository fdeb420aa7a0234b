"""What training reads of one (config, seed) run: the fields and methods a fit, its start and its results use.

The spine's frozen `Setup` (lottery/setup.py) is one; so is anything else with these members. A Protocol rather than
the Setup itself because the spine's `prepare` imports the packages below it (structured plans, scorers), so their
naming the spine, even in a type hint only, would close an import circle (tests/test_import_graph.py reads type-only
imports too). Members are read-only properties, as the Setup is frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from lottery.config import LotteryConfig
    from lottery.core.layout import RunPaths
    from lottery.core.pruning import Plan
    from lottery.data.datamodule import TensorDataModule


class RunSpec(Protocol):
    @property
    def cfg(self) -> LotteryConfig: ...
    @property
    def model_cfg(self) -> dict[str, Any]: ...
    @property
    def optim_cfg(self) -> dict[str, Any]: ...
    @property
    def datamodule(self) -> TensorDataModule: ...
    @property
    def total_steps(self) -> int: ...
    @property
    def rewind_step(self) -> int: ...
    @property
    def series_steps(self) -> tuple[int, ...]: ...  # level 0's network kept at these steps (train.save_at)
    @property
    def eval_every(self) -> int: ...
    @property
    def checkpoint_every(self) -> int | None: ...
    @property
    def levels(self) -> int: ...  # pruning levels after level 0 (the progress bar shows "level 3/8")
    @property
    def plan(self) -> Plan: ...
    @property
    def paths(self) -> RunPaths: ...

    def network(self, seed: int | None = None) -> torch.nn.Module: ...
    def lr_lambda(self) -> Callable[[int], float]: ...
    def level_key(self, level: int) -> str: ...
