"""A GGUF model dequantized once: the first load of a GGUF file (transformers' own GGUF support) saves the
dequantized model with `save_pretrained` into a cache folder, and every later load of the same file at the same dtype
reads those safetensors instead.

Why: transformers dequantizes a GGUF file tensor by tensor into a full state dict and then copies it into the model,
so a load holds the weights about twice (Gemma 3 270M: a 3.1 GB peak for 1.07 GB of float32 weights, 34 s on 2 CPU
cores), paid again by every job of a sweep. Read back from safetensors the weights are the same bits (tested), the
load takes seconds, and the peak is the model's own size. The file is the cache's key (its resolved path, size and
modification time, and the dtype), so a new or changed file is dequantized again.

The cache lives in <models cache>/.dequantized/<key>/ ($LOTTERY_MODELS or ~/.cache/lottery/models: lottery/models/
catalog.py); it is written atomically (a temporary folder renamed into place) and skipped, with the GGUF load kept,
where the folder cannot be written. Delete it to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lottery.models.catalog import cache_root

SOURCE = "source.json"  # beside the safetensors: which GGUF file (and dtype) they came from


def source_of(file: Path, dtype: str) -> dict[str, Any]:
    st = file.stat()
    return {"gguf": str(file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "dtype": dtype}


def folder_of(source: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / ".dequantized" / key


def load(file: Path, dtype: str, from_gguf: Callable[[], Any], from_folder: Callable[[Path], Any]) -> tuple[Any, str]:
    """(model, where it came from): the cached dequantized copy of `file` when there is one, else `from_gguf()`, whose
    result is then saved for next time."""
    source = source_of(file, dtype)
    folder = folder_of(source)
    try:
        kept = json.loads((folder / SOURCE).read_text())
    except (OSError, ValueError):
        kept = None
    if kept == source:
        return from_folder(folder), f"dequantized copy {folder}"
    model = from_gguf()
    _save(model, source, folder)
    return model, "GGUF file (dequantized on load)"


def _save(model: Any, source: dict[str, Any], folder: Path) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    except OSError:
        return  # a read-only cache: every load reads the GGUF file
    try:
        # save_pretrained refuses a model loaded from GGUF ("quantized with gguf and not serializable"), though its
        # weights are plain tensors by now: write them and the config as save_pretrained would (tied weights once)
        from safetensors.torch import save_model

        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        (tmp / SOURCE).write_text(json.dumps(source, sort_keys=True))
        # The folder's name is a hash of `source`, so a folder already there holds this very copy, saved by another
        # job that dequantized the same file at the same time: keep it (another process may be reading it), drop ours.
        if not folder.exists():
            os.replace(tmp, folder)
    except (OSError, ValueError, RuntimeError):
        pass  # no space, or another process renamed its copy in first: the model in memory is the same either way
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
