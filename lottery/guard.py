"""Guards around a run's output folder: one process per (configuration, seed) at a time, and a writable folder with
room for the run, both checked before any training.

The lock is an advisory `flock` on seed_<s>/.lock: the kernel releases it when its process dies, even by SIGKILL, so
a pre-empted job never leaves a stale lock behind. (flock does not span machines on some network file systems; give
concurrent cluster jobs different seeds or configurations, which is what a sweep does.)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another process is running the same configuration and seed."""


class OutputFolderError(OSError):
    """The output folder cannot hold the run: not writable, or not enough free space."""


@contextmanager
def exclusive(seed_dir: Path) -> Iterator[None]:
    seed_dir.mkdir(parents=True, exist_ok=True)
    handle = open(seed_dir / ".lock", "a+")  # noqa: SIM115 (held for the whole run)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise RunLockedError(
                f"{seed_dir} is being run by another process (pid {owner}); nothing was changed. Wait for it to "
                "finish (re-running then resumes or skips what it did), or run another seed or configuration."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def check_output_folder(seed_dir: Path, needed_bytes: int) -> None:
    """Fail before training when the folder cannot be written or lacks room for the run's artifacts."""
    try:
        seed_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=seed_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputFolderError(
            f"cannot write to the output folder {seed_dir}: {err.strerror or err}. Choose a writable root with "
            "root=<folder>."
        ) from err
    free = shutil.disk_usage(seed_dir).free
    if free < needed_bytes:
        raise OutputFolderError(
            f"the run needs about {needed_bytes / 2**20:.0f} MiB under {seed_dir} but only {free / 2**20:.0f} MiB are "
            "free; free some space or choose another root with root=<folder>."
        )


def estimate_bytes(num_parameters: int, levels: int, optimizer_slots: int = 2) -> int:
    """Artifacts of a run: per level the weights (4 bytes) and the mask (1 byte), plus the rewind point and one
    resume checkpoint (weights and `optimizer_slots` optimizer buffers each), with 20% headroom."""
    per_level = num_parameters * (4 + 1)
    checkpoints = 2 * num_parameters * 4 * (1 + optimizer_slots)
    return int(1.2 * (per_level * (levels + 1) + checkpoints))
