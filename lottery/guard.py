"""Guards around a run's output folder: locks that let jobs sharing a seed folder take turns, and a writable folder
with room for the run, checked before any training.

A lock is an advisory `flock` on a `.lock` file (lottery/job.py says which file guards what). A job that finds a lock
held waits for it, says once on stderr which pid holds it, and then resumes from what the holder left on disk. The
kernel releases a flock when its process dies, even by SIGKILL, so a killed or pre-empted job never leaves a stale
lock behind. Across machines (cluster jobs on a shared file system) flock holds on NFSv4 and on Lustre mounted with
`-o flock` (with `-o localflock` only within each node, which cannot be detected from here); a file system without
flock makes taking the lock fail with a clear error.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_SECONDS = 0.2  # how often a waiting job retries a held lock; waiting costs no CPU to speak of


class RunLockedError(RuntimeError):
    """Another process held the lock for longer than `lock_timeout`."""


class OutputFolderError(OSError):
    """The output folder cannot hold the run: not writable, not lockable, or not enough free space."""


def _holder(handle) -> str:
    handle.seek(0)
    pid, _, host = handle.read().strip().partition(" ")
    return f"pid {pid or 'unknown'}" + (f" on {host}" if host and host != socket.gethostname() else "")


@contextmanager
def exclusive(lock_file: Path, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file` for the block, waiting while another process holds it.

    `what` names what the lock guards, for the messages. `timeout` (seconds): give up with RunLockedError after
    waiting that long; None waits as long as it takes, 0 refuses at once."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a+")  # noqa: SIM115 (held for the whole block)
    try:
        started, announced = time.monotonic(), False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError as err:  # ENOLCK, EOPNOTSUPP, ENOSYS: the file system has no flock
                raise OutputFolderError(
                    f"cannot lock {lock_file}: {err.strerror or err}. The file system under root does not support "
                    "flock, which keeps jobs that share a seed folder apart; mount it with flock support (Lustre: "
                    "-o flock) or choose another root with root=<folder>.",
                ) from err
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise RunLockedError(
                    f"{what} ({lock_file}) is held by {_holder(handle)}; gave up after {waited:.0f} s "
                    f"(lock_timeout={timeout:g}) and changed nothing there. Let that job finish (re-running then "
                    "skips what it did), raise lock_timeout, or set lock_timeout=null to wait as long as it takes."
                )
            if not announced:
                print(
                    f"lottery: waiting for {_holder(handle)}, which holds {what} ({lock_file}); this job goes on "
                    "once it is released and skips every level already finished",
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
            time.sleep(POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
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
