"""The `lottery` command for torchrun, except that one rank SIGKILLs itself mid level (the cluster kill test).

    torchrun ... tests/kill_rank.py <rank> <fit> <step> <hydra overrides...>

Rank <rank> (torchrun's RANK) dies right after optimizer step <step> of the <fit>-th Trainer.fit it takes part in
(1-based: fit 1 is level 0), between two resume checkpoints if <step> is not a multiple of train.checkpoint_every.
Every other rank runs the plain command.
"""

from __future__ import annotations

import os
import signal
import sys

from lottery.cli import main
from lottery.training.module import LevelModule

rank, fit, step = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.argv = [sys.argv[0], *sys.argv[4:]]  # what Hydra reads

if int(os.environ["RANK"]) == rank:
    fits = {"n": 0}
    on_train_start, train_step = LevelModule.on_train_start, LevelModule.train_step

    def counting_start(self):
        fits["n"] += 1
        on_train_start(self)

    def killing_step(self, *args, **kwargs):
        out = train_step(self, *args, **kwargs)
        if fits["n"] == fit and self.trainer.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    LevelModule.on_train_start, LevelModule.train_step = counting_start, killing_step

main()
