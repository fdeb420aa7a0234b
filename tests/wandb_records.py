"""Read an offline W&B run file (`run-<id>.wandb`) back, so tests can check what reached W&B without a server.

The file is W&B's LevelDB-style log: a 7-byte header, then records (crc32, little-endian length, type) in 32 KiB
blocks, a record split across blocks as FIRST/MIDDLE/LAST pieces; each record is a protobuf `Record`.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def raw_records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def read_run(run_dir: Path) -> dict:
    """{"run": (id, job_type, group, tags), "history": keys logged, "summary": summary keys, "kinds": record types,
    "artifacts": (type, name) of logged artifacts} of one offline run."""
    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_dir).glob("*.wandb")
    out = {"run": None, "history": set(), "summary": set(), "kinds": set(), "artifacts": []}
    for data in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        out["kinds"].add(kind)
        if kind == "artifact":
            out["artifacts"].append((record.artifact.type, record.artifact.name))
        if kind == "run":
            r = record.run
            out["run"] = (r.run_id, r.job_type, r.run_group, tuple(r.tags))
        elif kind == "history":
            out["history"] |= {i.key or "/".join(i.nested_key) for i in record.history.item}
        elif kind == "summary":
            out["summary"] |= {i.key or "/".join(i.nested_key) for i in record.summary.update}
    return out
