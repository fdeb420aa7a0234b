"""A Hydra callback for the cluster tests: in the process of job number <job>, deliver submitit's time-limit signal
(SIGUSR2, what submitit's controller sends when a job nears its limit) right after optimizer step <step> of level
<level>, once (a marker file in <folder> remembers it across the requeue).

    +hydra.callbacks.timeout._target_=timeout_callback.TimeLimitAt +hydra.callbacks.timeout.job=0
    +hydra.callbacks.timeout.level=1 +hydra.callbacks.timeout.step=30 +hydra.callbacks.timeout.folder=<dir>
    (with tests/ on PYTHONPATH)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class TimeLimitAt(Callback):
    def __init__(self, job: int, level: int, step: int, folder: str) -> None:
        self.job, self.level, self.step, self.folder = job, level, step, folder

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        import lottery.training.fit as fit
        from lottery.training.module import LevelModule

        if config.hydra.job.num != self.job:
            return
        marker = Path(self.folder) / "time-limit-sent"
        current = {"level": -1}
        fit_stack, train_step = fit.fit_stack, LevelModule.train_step

        def tracked_fit_stack(setups, specs, trackers):
            current["level"] = specs[0].level
            return fit_stack(setups, specs, trackers)

        def signalling_step(module, *args, **kwargs):
            out = train_step(module, *args, **kwargs)
            if current["level"] == self.level and module.trainer.global_step == self.step and not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGUSR2)
            return out

        fit.fit_stack, LevelModule.train_step = tracked_fit_stack, signalling_step
