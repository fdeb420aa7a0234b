"""The `lottery` command for torchrun, except that one rank freezes itself (SIGSTOP: alive, its sockets open, as a
node lost without closing them) at a chosen point, after writing the time and its pid to a file (the cluster wait
tests).

    torchrun ... tests/freeze_rank.py <rank> <when> <stamp file> <hydra overrides...>

<when>: "between" freezes right after the first Trainer.fit ends (rank 0: while the followers wait for its next
message); "inside:<step>" right after optimizer step <step> of the second fit (while the others wait for its
gradients). With FREEZE_SIGNAL=KILL in the environment the rank dies there instead (SIGKILL: its sockets close).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from lottery.cli import main
from lottery.training.module import LevelModule

rank, when, stamp = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
sys.argv = [sys.argv[0], *sys.argv[4:]]  # what Hydra reads


def freeze() -> None:
    stamp.write_text(f"{time.time()} {os.getpid()}\n")  # the pid: the test ends this stopped process itself
    os.kill(os.getpid(), signal.SIGKILL if os.environ.get("FREEZE_SIGNAL") == "KILL" else signal.SIGSTOP)


if int(os.environ["RANK"]) == rank:
    fits = {"n": 0}
    on_train_start, on_train_end, train_step = (
        LevelModule.on_train_start,
        LevelModule.on_train_end,
        LevelModule.train_step,
    )

    def counting_start(self):
        fits["n"] += 1
        on_train_start(self)

    def ending(self):
        on_train_end(self)
        if when == "between" and fits["n"] == 1:
            freeze()

    def stepping(self, *args, **kwargs):
        out = train_step(self, *args, **kwargs)
        if when.startswith("inside:") and fits["n"] == 2 and self.trainer.global_step == int(when.split(":")[1]):
            freeze()
        return out

    LevelModule.on_train_start, LevelModule.on_train_end, LevelModule.train_step = counting_start, ending, stepping

main()
