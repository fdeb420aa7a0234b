"""trainer=ddp on one machine: Lightning's DDP over workers spawned for one fit (lottery/training/distributed.py),
each worker leaving its process group when the fit ends.

Without that, a worker exited with gloo's threads still running and the C++ runtime aborted it ("terminate called
without an active exception", SIGABRT) after a finished fit: 2 of 8 two-level `trainer=ddp trainer.devices=2` CPU
runs here failed with it. Only spawned workers: a cluster launch keeps its group for every fit of the job. A module
of its own so the strategy class pickles to the workers and Lightning loads only when DDP is asked for.
"""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy


class SpawnedDDP(DDPStrategy):
    def teardown(self) -> None:
        super().teardown()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
