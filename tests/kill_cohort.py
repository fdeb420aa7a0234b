"""Run a tiny cohort and SIGKILL this process at a chosen point (used by tests/test_stack_fit.py).

    python tests/kill_cohort.py <point> <level> <step> <seeds> <hydra overrides...>

point = "step": right after optimizer step <step> of level <level>, before that step's checkpoints are written;
point = "split": after the first replica's last.ckpt at step <step> of level <level> is in place and before the
        others are, so the replicas resume from different steps;
point = "level_end": after the first replica of level <level> has written its artifacts, before the others have.
<seeds>: comma-separated, the cohort's seeds.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import compose_config  # noqa: E402

import lottery.training.checkpoints as checkpoints  # noqa: E402
import lottery.training.fit as fit  # noqa: E402
import lottery.training.results as results  # noqa: E402
from lottery.cli import prepare_job, run_cohort_configs  # noqa: E402
from lottery.training.module import LevelModule  # noqa: E402

point, level, step, seeds, overrides = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
current = {"level": -1}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


fit_stack = fit.fit_stack


def tracked(setups, fits, trackers):
    current["level"] = fits[0].level
    return fit_stack(setups, fits, trackers)


fit.fit_stack = tracked

if point == "step":
    optimizer_step = LevelModule.train_step

    def killing_step(self, *args, **kwargs):
        optimizer_step(self, *args, **kwargs)
        if current["level"] == level and self.trainer.global_step == step:
            die()

    LevelModule.train_step = killing_step
elif point == "split":
    replace = checkpoints.os.replace

    def killing_replace(src, dst):
        replace(src, dst)
        if Path(dst).name == "last.ckpt" and f"level_{level}" in Path(dst).parts and current["level"] == level:
            import torch

            if int(torch.load(dst, weights_only=True, mmap=True)["global_step"]) == step:
                die()

    checkpoints.os.replace = killing_replace
elif point == "level_end":
    finish_level = results.finish_level

    def killing_finish(setup, spec, *args, **kwargs):
        out = finish_level(setup, spec, *args, **kwargs)
        if spec.level == level:
            die()
        return out

    results.finish_level = killing_finish
else:
    raise SystemExit(f"unknown kill point {point!r}")

run_cohort_configs([prepare_job(compose_config([*overrides, f"seed={s}"])) for s in seeds.split(",")])
