"""The child process of benchmarks/startup.py: the `lottery` command, instrumented to report when each start-up
phase ends (wall-clock seconds since the parent launched it) and, in `first` mode, to exit at the first training step.

    python benchmarks/speed/probe.py <first|kill:<level>:<step>> <launch time.time()> <lottery overrides...>

Marks go to stderr as `probe <phase> <seconds>` lines; `kill:<level>:<step>` SIGKILLs the process right after that
optimizer step (leaving the level's last resume checkpoint behind, as a real kill would).
"""

from __future__ import annotations

import os
import signal
import sys
import time

MODE, LAUNCHED, OVERRIDES = sys.argv[1], float(sys.argv[2]), sys.argv[3:]


def mark(phase: str) -> None:
    print(f"probe {phase} {time.time() - LAUNCHED:.4f}", file=sys.stderr, flush=True)


def wrap(owner, name: str, phase: str) -> None:
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        out = inner(*args, **kwargs)
        mark(phase)
        return out

    setattr(owner, name, timed)


mark("interpreter")
import lottery.cli as cli  # noqa: E402

mark("import lottery.cli (hydra)")
import lottery.job  # noqa: E402, F401  (what run_config imports first: lightning and the whole package)
import lottery.setup as setup  # noqa: E402
import lottery.training.fit as fit  # noqa: E402
from lottery.training.module import LevelModule  # noqa: E402

mark("import lottery.job (lightning)")
run_config = cli.run_config


def entered(cfg):
    mark("hydra compose")
    return run_config(cfg)


cli.run_config = entered
wrap(setup, "prepare", "prepare (data, plan, folder)")
wrap(fit, "check_checkpoint", "checkpoint check")
wrap(fit, "make_trainer", "Trainer built")
level_mode = MODE.split(":")
if level_mode[0] == "first":

    def first_step(self):
        mark("first training step")
        os._exit(0)

    LevelModule.on_train_start = first_step
else:
    kill_level, kill_step = int(level_mode[1]), int(level_mode[2])
    step_fn, current = LevelModule.train_step, {"level": -1}
    fit_levels = fit.fit_levels

    def tracked(setups, specs, trackers):
        current["level"] = specs[0].level
        return fit_levels(setups, specs, trackers)

    fit.fit_levels = tracked

    def killing_step(self, *args, **kwargs):
        step_fn(self, *args, **kwargs)
        if current["level"] == kill_level and self.trainer.global_step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    LevelModule.train_step = killing_step

sys.argv = ["lottery", *OVERRIDES]
cli.main()
