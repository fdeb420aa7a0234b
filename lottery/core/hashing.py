"""Experiment hashes: a short digest of only the settings that change results.

Like open_lth, a setting left at its schema default is not part of the hash, so adding a new option (with a default
that reproduces the old behaviour) never renames existing result folders. Fields marked `metadata={"hash": False}`
(paths, devices, loggers) and private fields (`_target_`) never count: keys are stable names, not import paths.
tests/test_hashing.py pins literal hashes and schema defaults, so changing either fails CI on purpose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in hash_inputs(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def hash_inputs(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a dataclass into `{"section.field": value}` holding only hashed, non-default settings."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name.startswith("_") or not f.metadata.get("hash", True):
            continue
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(hash_inputs(value, prefix=f"{key}."))
            continue
        if value == _default_of(f):
            continue
        out[key] = _plain(value)
    return out


def digest(inputs: dict[str, Any], length: int = 10) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
