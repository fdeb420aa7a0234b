"""Reading and writing run artifacts: every write is atomic, every read is safe.

Writes go to a temporary file in the same folder and are then `os.replace`d into place, so a run killed at any instant
leaves either the old file or the new one, never half of one. Reads use `torch.load(weights_only=True)`, which refuses
pickles that would run code; a refused, corrupt or truncated file becomes an ArtifactError naming the file and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

PREFIX = "network."  # the network's keys in a level checkpoint's state dict (the LightningModule's `network`)


class ArtifactError(RuntimeError):
    """An artifact on disk that cannot be trusted: unreadable, truncated, unsafe or from another configuration."""


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place (removed if `write` fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates files as 0600; give artifacts the permissions of a plain write so shared folders stay readable.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj: Any, path: Path) -> None:
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def write_text(text: str, path: Path) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(obj: Any, path: Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def copy_file(source: Path, path: Path) -> None:
    """Copy `source` to `path` through a temporary file, like every other artifact write."""
    write_atomically(path, lambda tmp: shutil.copyfile(source, tmp))


def write_csv(
    rows: list[dict[str, Any]], path: Path, columns: Sequence[str] | None = None, lineterminator: str = "\n"
) -> None:
    """Rows as a CSV file: the given `columns` (other keys ignored), or the first row's keys (`empty` for no rows)."""
    buf = io.StringIO()
    fields = list(columns) if columns is not None else (list(rows[0]) if rows else ["empty"])
    writer = csv.DictWriter(
        buf, fieldnames=fields, extrasaction="ignore" if columns is not None else "raise", lineterminator=lineterminator
    )
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda tmp: tmp.write_bytes(buf.getvalue().encode()))


def load_torch(path: Path, what: str = "artifact", mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` with errors that name the file and what to do about it. `mmap`: map the
    tensors' bytes instead of reading them (for a look at a file's structure; the tensors are read on use)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise ArtifactError(
            f"cannot safely load {what} {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            "It is corrupt, truncated, or holds objects that could run code (refused on purpose). "
            "Move it aside and re-run to regenerate it."
        ) from err


def read_json(path: Path, what: str = "artifact") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError covers bad JSON and bytes that are not UTF-8
        raise ArtifactError(f"cannot read {what} {path}: {err}. Move it aside and re-run to regenerate it.") from err
