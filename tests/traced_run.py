"""Run a tiny experiment as its own process, recording every level it trains (used by the concurrent-job tests).

    python tests/traced_run.py <trace file> <barrier folder> <processes> <hydra overrides...>

Each process waits at the barrier until <processes> of them have arrived, so they really start together, then
appends one JSON line per trained level to the trace file: {"pid", "where" (trunk or branch_<b>), "level", "start",
"end"} (wall-clock seconds).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import compose_config  # noqa: E402

import lottery.training.fit as fit  # noqa: E402
from lottery.cli import run_config  # noqa: E402

trace, barrier, processes, overrides = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
fit_stack = fit.fit_stack


def traced_fit_stack(setups, specs, trackers):
    start = time.time()
    module = fit_stack(setups, specs, trackers)
    spec = specs[0]
    parent = spec.paths.dir.parent.name
    where = parent if parent.startswith("branch_") else "trunk"
    line = json.dumps({"pid": os.getpid(), "where": where, "level": spec.level, "start": start, "end": time.time()})
    with open(trace, "a") as f:  # one short O_APPEND write per line: lines of two processes never interleave
        f.write(line + "\n")
    return module


fit.fit_stack = traced_fit_stack  # every fit of the trunk and the branches goes through it

cfg = compose_config(overrides)
barrier.mkdir(parents=True, exist_ok=True)
(barrier / str(os.getpid())).touch()
deadline = time.time() + 120
while len(list(barrier.iterdir())) < processes:
    if time.time() > deadline:
        raise SystemExit("the other processes never reached the barrier")
    time.sleep(0.02)
run_config(cfg)
