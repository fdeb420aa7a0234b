"""Run a tiny experiment and SIGKILL this process at a chosen point (used by the kill-and-resume tests).

    python tests/kill_run.py <point> <level> <step> <hydra overrides...>

point = "step": right after optimizer step <step> of level <level>, before that step's checkpoint is written;
point = "checkpoint": in the middle of writing the resume checkpoint at <step> of <level> (half a file on disk);
point = "level_end": after level <level> has written all its artifacts, before the next level starts;
point = "artifact:<file>": after writing the temporary file of <file> (e.g. weights.pt) of level <level>, before it
        is renamed into place; a <file> with a slash (search/weights.pt) names the path's end, whatever the level;
point = "branch_step": like "step", inside the control branch's level <level>;
point = "fit:<n>": right after optimizer step <step> of the n-th Trainer.fit of the process (1-based), whatever
        trains there (the instability analysis's copies, the early-bird search); <level> is ignored.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import lightning as L  # noqa: E402
from conftest import compose_config  # noqa: E402

import lottery.training.fit as fit  # noqa: E402
import lottery.training.results as results  # noqa: E402
from lottery.cli import run_config  # noqa: E402
from lottery.training.module import LevelModule  # noqa: E402

point, level, step, overrides = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
current = {"level": -1, "branch": False}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


fit_stack = fit.fit_stack


def tracked_fit_stack(setups, specs, trackers):
    current["level"], current["branch"] = specs[0].level, specs[0].paths.dir.parent.name.startswith("branch_")
    return fit_stack(setups, specs, trackers)


fit.fit_stack = tracked_fit_stack  # every fit of the trunk and the branches goes through it

if point in ("step", "branch_step"):
    optimizer_step = LevelModule.train_step

    def killing_step(self, *args, **kwargs):
        optimizer_step(self, *args, **kwargs)
        in_branch = point == "branch_step"
        if current["level"] == level and current["branch"] == in_branch and self.trainer.global_step == step:
            die()

    LevelModule.train_step = killing_step
elif point == "checkpoint":
    import torch

    save = torch.save

    def killing_save(obj, filepath, *args, **kwargs):
        save(obj, filepath, *args, **kwargs)
        saved_step = obj.get("global_step") if isinstance(obj, dict) else None
        if current["level"] == level and saved_step == step and str(filepath).endswith(".tmp"):
            with open(filepath, "r+b") as f:  # leave a truncated temp file behind, as a kill mid-write would
                f.truncate(100)
            die()

    torch.save = killing_save
elif point == "level_end":
    finish_level = results.finish_level

    def killing_finish(setup, spec, *args, **kwargs):
        out = finish_level(setup, spec, *args, **kwargs)
        if spec.level == level:
            die()
        return out

    results.finish_level = killing_finish
elif point.startswith("artifact:"):
    import lottery.core.artifacts as artifacts

    name = point.removeprefix("artifact:")
    replace = artifacts.os.replace

    def killing_replace(src, dst):
        if str(dst).endswith(name if "/" in name else f"level_{level}/{name}"):
            die()  # the temporary file is complete on disk, the rename never happens
        return replace(src, dst)

    artifacts.os.replace = killing_replace
elif point.startswith("fit:"):
    target, fits = int(point.removeprefix("fit:")), {"count": 0}
    fit = L.Trainer.fit

    def counting_fit(self, *args, **kwargs):
        fits["count"] += 1
        return fit(self, *args, **kwargs)

    L.Trainer.fit = counting_fit
    optimizer_step = LevelModule.train_step

    def killing_step(self, *args, **kwargs):
        optimizer_step(self, *args, **kwargs)
        if fits["count"] == target and self.trainer.global_step == step:
            die()

    LevelModule.train_step = killing_step
else:
    raise SystemExit(f"unknown kill point {point!r}")

run_config(compose_config(overrides))
