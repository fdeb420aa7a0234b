"""Jobs that share a trunk (same hash and seed) at the same time: the trunk is trained once, by whichever job locks it
first, the other job waits and then trains only its own branch, side by side with the first one's branch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny
from omegaconf import OmegaConf

from lottery.cli import run_config
from lottery.guard import RunLockedError, exclusive
from lottery.setup import experiment_hash

TRACED_RUN = Path(__file__).with_name("traced_run.py")
# Levels long enough (about a second each) that the job which locks the trunk second surely finds it held.
LONGER = ("train.duration=200it", "train.eval_every=50it", "train.checkpoint_every=100it")


def seed_dir_of(overrides: list[str]) -> Path:
    settings = OmegaConf.to_object(compose_config(overrides))
    return Path(settings.root) / settings.name / experiment_hash(settings)[0] / f"seed_{settings.seed}"


def test_two_jobs_sharing_a_trunk_train_it_once_and_their_branches_side_by_side(tmp_path):
    trace, barrier = tmp_path / "trace.jsonl", tmp_path / "barrier"
    jobs = {
        branch: subprocess.Popen(
            [
                sys.executable,
                str(TRACED_RUN),
                str(trace),
                str(barrier),
                "2",
                *tiny(tmp_path, *LONGER, f"branch={branch}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for branch in ("random_reinit", "random_prune")
    }
    out = {branch: job.communicate(timeout=300) for branch, job in jobs.items()}
    for branch, job in jobs.items():
        assert job.returncode == 0, out[branch][1][-3000:]

    fits = [json.loads(line) for line in trace.read_text().splitlines()]
    trunk = [f for f in fits if f["where"] == "trunk"]
    assert Counter(f["level"] for f in trunk) == {0: 1, 1: 1, 2: 1}, "every trunk level trained exactly once"
    (trainer,) = {f["pid"] for f in trunk}
    # Said once, by the job that waited for the trunk. (Either job may also wait a moment for the ticket summary when
    # both branches end together, which is the lock doing its job, so those messages are not counted.)
    trunk_waits = [err.count("which holds the trunk") for _, err in out.values()]
    assert sorted(trunk_waits) == [0, 1], trunk_waits
    waiter = next(err for _, err in out.values() if "which holds the trunk" in err)
    assert f"waiting for pid {trainer}, which holds the trunk" in waiter
    spans = {}
    for branch in jobs:
        mine = [f for f in fits if f["where"] == f"branch_{branch}"]
        assert sorted(f["level"] for f in mine) == [1, 2], branch
        spans[branch] = (min(f["start"] for f in mine), max(f["end"] for f in mine))
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), "branches should overlap in time"

    seed_dir = seed_dir_of(tiny(tmp_path, *LONGER))
    for level_dir in [*seed_dir.glob("level_*"), *seed_dir.glob("branch_*/level_*")]:
        metrics = json.loads((level_dir / "metrics.json").read_text())
        for name in ("mask.pt", "weights.pt"):
            torch.load(level_dir / name, weights_only=True)  # complete, loadable files
        assert metrics["steps"] == 200
    summary = json.loads((seed_dir / "tickets.json").read_text())  # written last by the job that finished last
    assert all(set(r["controls"]) == {"random_reinit", "random_prune"} for r in summary["levels"][1:])
    assert not list(seed_dir.rglob("*.tmp"))


def test_a_job_waits_for_its_trunk_then_skips_what_the_holder_finished(tmp_path, capfd):
    overrides = tiny(tmp_path, "levels=1")
    first = run_config(compose_config(overrides))  # the trunk, finished
    seed_dir = seed_dir_of(overrides)
    rows: list = []
    waiter = threading.Thread(target=lambda: rows.append(run_config(compose_config(overrides))))
    with exclusive(seed_dir / ".lock", "the trunk"):  # another job holds the trunk for a second
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive() and not rows, "the job should wait while the trunk is held"
    waiter.join(timeout=120)
    assert rows == [first]  # then it read what the holder finished and trained nothing
    assert capfd.readouterr().err.count(f"lottery: waiting for pid {os.getpid()}, which holds the trunk") == 1


@pytest.mark.parametrize("lock", [".lock", "branch_random_prune/.lock"])
def test_a_job_gives_up_after_lock_timeout_naming_the_holder(tmp_path, lock):
    overrides = tiny(tmp_path, "levels=1", "branch=random_prune", "lock_timeout=0.5")
    seed_dir = seed_dir_of(overrides)
    started = time.monotonic()
    with exclusive(seed_dir / lock, "held by the test"):
        with pytest.raises(RunLockedError, match=rf"held by pid {os.getpid()}; gave up .*lock_timeout=0\.5"):
            run_config(compose_config(overrides))
    assert 0.5 <= time.monotonic() - started < 30
    assert not list(seed_dir.glob("branch_random_prune/level_*"))  # the branch was never touched


def test_a_file_system_without_flock_is_a_clear_error_before_training(tmp_path, monkeypatch):
    import errno

    import lottery.guard as guard

    def no_flock(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(guard.fcntl, "flock", no_flock)
    with pytest.raises(guard.OutputFolderError, match="does not support flock.*-o flock.*root=<folder>"):
        run_config(compose_config(tiny(tmp_path)))
    assert not list(tmp_path.rglob("level_*"))
