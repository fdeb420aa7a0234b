"""Run a pretrained no-retrain study and SIGKILL this process right after its n-th measurement is written to
no_retrain/partial.json (used by tests/test_study_resume.py).

    python tests/kill_study.py <n> <hydra overrides...>
    python tests/kill_study.py series:<n> <overrides...>   counting only the writes of a checkpoint series' points
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import compose_config  # noqa: E402

from lottery.cli import run_config  # noqa: E402
from lottery.structured.journal import Journal  # noqa: E402

only = "/series/" if sys.argv[1].startswith("series:") else ""
after, overrides = int(sys.argv[1].removeprefix("series:")), sys.argv[2:]
written = {"count": 0}
write = Journal._write


def killing_write(self) -> None:
    write(self)
    if only not in str(self.path):
        return
    written["count"] += 1
    if written["count"] == after:
        os.kill(os.getpid(), signal.SIGKILL)


Journal._write = killing_write
run_config(compose_config(overrides))
