"""Reliability: locks that a killed process never leaves behind (jobs sharing a folder: test_concurrency.py), clear
errors for unusable output folders and damaged artifacts, and W&B trouble that never costs a result."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny

from lottery.cli import run_config
from lottery.core.artifacts import ArtifactError
from lottery.guard import OutputFolderError, exclusive

KILL_SCRIPT = Path(__file__).with_name("kill_run.py")


def test_the_lock_is_released_when_its_process_is_killed(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "step", "0", "30", *tiny(tmp_path)], capture_output=True, timeout=300
    )
    assert proc.returncode == -9
    (seed_dir,) = list(tmp_path.glob("default/*/seed_0"))
    with exclusive(seed_dir / ".lock", "the trunk", timeout=0):  # a SIGKILLed holder leaves no stale lock
        pass


def test_an_unwritable_output_root_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputFolderError, match="cannot write to the output folder"):
        run_config(compose_config(tiny(blocker / "outputs")))


def test_too_little_free_space_fails_before_training(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OutputFolderError, match="only 0 MiB are free"):
        run_config(compose_config(tiny(tmp_path)))
    assert not list(tmp_path.rglob("level_*"))


def test_disk_full_mid_run_leaves_no_half_written_artifact_and_resumes(tmp_path, monkeypatch):
    import lottery.core.artifacts as artifacts

    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        if str(f).endswith(".tmp") and "weights.pt" in str(f) and calls["n"] == 0:
            calls["n"] += 1
            with open(f, "wb") as handle:
                handle.write(b"\0" * 100)  # part of the file made it before the disk filled up
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(artifacts.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_config(compose_config(tiny(tmp_path)))
    (seed_dir,) = list(tmp_path.glob("default/*/seed_0"))
    assert not list(seed_dir.rglob("*.tmp")) and not list(seed_dir.rglob(".*.tmp"))
    assert not (seed_dir / "level_0" / "weights.pt").exists()
    assert not (seed_dir / "level_0" / "metrics.json").exists()
    rows = run_config(compose_config(tiny(tmp_path)))  # space is back: the same command finishes the run
    assert [r["level"] for r in rows] == [0, 1, 2]


def test_wandb_that_cannot_start_is_reported_once_and_the_run_completes(tmp_path, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise wandb.errors.CommError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = run_config(compose_config(tiny(tmp_path, "logger=wandb")))
    messages = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert len(messages) == 1 and "could not start" in messages[0]
    assert [r["level"] for r in rows] == [0, 1, 2]


def test_wandb_failing_mid_run_is_reported_once_and_the_run_completes(tmp_path, monkeypatch):
    from lottery.training.tracking import Tracker

    real_open = Tracker._open

    def open_then_break(self):
        run = real_open(self)
        if run is not None:

            def broken_log(*args, **kwargs):
                raise RuntimeError("W&B service crashed")

            monkeypatch.setattr(run, "log", broken_log)
        return run

    monkeypatch.setattr(Tracker, "_open", open_then_break)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = run_config(compose_config(tiny(tmp_path, "logger=wandb")))
    messages = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert len(messages) == 1 and "logging failed" in messages[0]
    assert [r["level"] for r in rows] == [0, 1, 2]
    (seed_dir,) = list(tmp_path.glob("default/*/seed_0"))
    assert json.loads((seed_dir / "tickets.json").read_text())["dense_test_acc"] == rows[0]["test_acc"]


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


PWNED = Path("/tmp/lottery_pwned_marker")


@pytest.mark.parametrize("artifact", ["rewind.ckpt", "level_0/weights.pt", "level_1/checkpoints/last.ckpt"])
def test_a_crafted_pickle_in_place_of_an_artifact_is_refused_without_running_it(run_tiny, artifact):
    PWNED.unlink(missing_ok=True)
    _, seed_dir = run_tiny("levels=0")
    target = seed_dir / artifact
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(ArtifactError, match=str(target)):
        run_tiny("levels=1")
    assert not PWNED.exists(), "the crafted pickle ran code"
    assert target.read_bytes() == pickle.dumps({"state_dict": Payload()})  # left in place for inspection


@pytest.mark.parametrize("artifact", ["rewind.ckpt", "level_0/weights.pt", "level_0/mask.pt"])
def test_a_truncated_artifact_is_a_clear_error_naming_the_file(run_tiny, artifact):
    _, seed_dir = run_tiny("levels=0")
    target = seed_dir / artifact
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=str(target)):
        run_tiny("levels=1")
