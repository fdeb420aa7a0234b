"""A cohort's data and checkpoints, kept in each replica's solo format.

A cohort reads and writes the files a solo fit does: every replica's rewind point (`rewind.ckpt`) and resume point
(`level_<L>/last.ckpt`) is a solo Lightning checkpoint, sliced out of the cohort's stacked state, and a cohort starts
by stacking its replicas' own checkpoints. So a seed started in a cohort can be resumed alone and the reverse, and
resume, reuse, tickets.json and lottery-compare see nothing new. The stacked state lives only in memory and in a
temporary file the cohort's Trainer restores from.

Checkpoint layout (Lightning's): `state_dict` (stacked on dim 0: slice), `optimizer_states` (per-parameter tensors
stacked: slice; the shared scalar `step`: copy), and the loops, LR schedulers and global step, which replicas share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lottery.core import artifacts
from lottery.data.batches import StepBatches

SHARED = ("loops", "lr_schedulers", "global_step", "epoch", "pytorch-lightning_version")


def _per_replica(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0


def stack_checkpoints(checkpoints: Sequence[dict]) -> dict:
    """One cohort checkpoint from the replicas' solo checkpoints, which must be at one step."""
    steps = {int(c["global_step"]) for c in checkpoints}
    assert len(steps) == 1, f"a cohort's replicas start from one step, not {sorted(steps)}"
    first = checkpoints[0]
    stacked = {key: first[key] for key in SHARED if key in first}
    stacked["state_dict"] = {k: torch.stack([c["state_dict"][k] for c in checkpoints]) for k in first["state_dict"]}
    optimizers = []
    for j, opt in enumerate(first["optimizer_states"]):
        state = {}
        for idx, entry in opt["state"].items():
            values = [c["optimizer_states"][j]["state"][idx] for c in checkpoints]
            state[idx] = {k: torch.stack([v[k] for v in values]) if _per_replica(x) else x for k, x in entry.items()}
        optimizers.append({"state": state, "param_groups": opt["param_groups"]})
    stacked["optimizer_states"] = optimizers
    stacked["lottery_cohort"] = [c.get("lottery", {}) for c in checkpoints]
    stacked["lottery"] = {k: v for k, v in first.get("lottery", {}).items() if k == "torch_rng"}
    stacked["callbacks"] = {}
    return stacked


def split_checkpoint(stacked: dict, i: int) -> dict:
    """Replica i's solo checkpoint (what LevelModule saves) out of a cohort checkpoint."""
    solo = {key: stacked[key] for key in SHARED if key in stacked}
    solo["state_dict"] = {k: v[i].clone() for k, v in stacked["state_dict"].items()}
    solo["optimizer_states"] = [
        {
            "state": {
                idx: {k: x[i].clone() if _per_replica(x) else x for k, x in entry.items()}
                for idx, entry in opt["state"].items()
            },
            "param_groups": opt["param_groups"],
        }
        for opt in stacked["optimizer_states"]
    ]
    solo["lottery"] = {**stacked["lottery_cohort"][i], **stacked.get("lottery", {})}
    solo["callbacks"] = {}
    return solo


def save_split(trainer: L.Trainer, paths: Sequence[Path | None], scratch: Path) -> None:
    """Save the cohort's state and write each replica's solo checkpoint to its path (None: skip), each atomically."""
    trainer.save_checkpoint(scratch, weights_only=False)
    stacked = torch.load(scratch, map_location="cpu", weights_only=True)
    for i, path in enumerate(paths):
        if path is None:
            continue
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(split_checkpoint(stacked, i), tmp)
        os.replace(tmp, path)
    scratch.unlink(missing_ok=True)


def load_stacked(paths: Sequence[Path], scratch: Path) -> Path:
    """Stack the replicas' checkpoints into one file the cohort's Trainer restores from; returns its path."""
    stacked = stack_checkpoints([artifacts.load_torch(p, "checkpoint") for p in paths])
    torch.save(stacked, scratch)
    return scratch


class CohortBatches:
    """Every replica's batch of a step, stacked: replica i's is its own StepBatches' (its seed's data order), so a
    replica sees exactly the batches of its solo fit. When every replica reads the same tensors without
    augmentation (the seeds of one config: one split), a step's batches are one gather of the replicas' stacked
    indices instead of one gather each and a stack, the same values in fewer operations."""

    def __init__(self, batches: Sequence[StepBatches], start_step) -> None:
        self.batches = list(batches)
        self.start_step = start_step
        self.total_steps = self.batches[0].total_steps
        first = self.batches[0]
        self.shared = not any(b.augment for b in self.batches) and all(
            b.x.shape == first.x.shape and torch.equal(b.x, first.x) and torch.equal(b.y, first.y)
            for b in self.batches[1:]
        )

    def __len__(self) -> int:
        return self.total_steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        caches: list[dict] = [{} for _ in self.batches]
        x, y = self.batches[0].x, self.batches[0].y
        for step in range(self.start_step(), self.total_steps):
            if self.shared:
                idx = torch.stack([b.indices(step, c) for b, c in zip(self.batches, caches, strict=True)])
                yield x[idx], y[idx]
                continue
            pairs = [b.batch(step, c) for b, c in zip(self.batches, caches, strict=True)]
            yield torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


class CohortCheckpoints(L.Callback):
    """The cohort's ResumeCheckpoint and RewindCapture: each replica's last.ckpt every `every` steps and after
    `seconds` of training, and its rewind point at step `rewind_step` (when `rewinds` is given), all in solo format."""

    def __init__(
        self,
        resumes: Sequence[Path],
        scratch: Path,
        total_steps: int,
        every: int | None = None,
        seconds: float | None = None,
        rewinds: Sequence[Path] | None = None,
        rewind_step: int = 0,
    ) -> None:
        self.resumes, self.rewinds = list(resumes), None if rewinds is None else list(rewinds)
        self.scratch = Path(scratch)
        self.total_steps = total_steps
        self.every = None if every is None else max(1, every)
        self.seconds = seconds
        self.rewind_step = rewind_step
        self._last = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()
        if self.rewinds is not None and self.rewind_step == 0 and trainer.global_step == 0:
            save_split(trainer, self.rewinds, self.scratch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.rewinds is not None and self.rewind_step > 0 and step == self.rewind_step:
            save_split(trainer, self.rewinds, self.scratch)
        if step >= self.total_steps:
            return
        due = self.every is not None and step % self.every == 0
        if self.seconds is not None and time.perf_counter() - self._last >= self.seconds:
            due = True
        if due:
            save_split(trainer, self.resumes, self.scratch)
            self._last = time.perf_counter()
