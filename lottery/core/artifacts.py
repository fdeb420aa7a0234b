"""Reading and writing run artifacts: every write is atomic, every read is safe.

Writes go to a temporary file in the same folder and are then `os.replace`d into place, so a run killed at any instant
leaves either the old file or the new one, never half of one. Reads use `torch.load(weights_only=True)`, which refuses
pickles that would run code; a refused, corrupt or truncated file becomes an ArtifactError naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class ArtifactError(RuntimeError):
    """An artifact on disk that cannot be trusted: unreadable, truncated, unsafe or from another configuration."""


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
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
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def write_text(text: str, path: Path) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text))


def write_json(obj: Any, path: Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def load_torch(path: Path, what: str = "artifact") -> Any:
    """`torch.load(weights_only=True)` with errors that name the file and what to do about it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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
