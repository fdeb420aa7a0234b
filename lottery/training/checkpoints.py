"""A fit's data and checkpoints, kept per replica in one format whatever the stack size.

Every replica's rewind point (`rewind.ckpt`) and resume point (`level_<L>/last.ckpt`) is its own Lightning checkpoint
with the solo network's tensor shapes, sliced out of the stack's state; a fit starts by stacking its replicas' own
checkpoints. So a seed trained in a stack of 8 resumes alone and the reverse, and resume, reuse, tickets.json and
lottery-compare see one format. The stacked state lives only in memory and in a scratch file the Trainer restores
from and saves to.

Checkpoint layout (Lightning's): `state_dict` (stacked on dim 0: slice), `optimizer_states` (per-parameter tensors
stacked: slice; the shared scalar `step`: copy), the loops, LR schedulers and global step, which replicas share, and
`lottery` (the replica's progress: best accuracy, early-stopping point, training seconds), and `lottery_engine`.
Checkpoints written before the one engine (by the solo LevelModule or a cohort, under Lightning's automatic
optimization) are converted when they load: their step counter moves to where manual optimization keeps it
(`convert`); their `torch_rng` entry is ignored: a fit draws nothing from torch's global generator (data order and
augmentation are functions of (seed, step); models with dropout train alone). A checkpoint of an unknown engine
version is refused with a message naming it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lottery.core import artifacts
from lottery.data.batches import StepBatches, distributed_rank

SHARED = ("loops", "lr_schedulers", "global_step", "epoch", "pytorch-lightning_version", "callbacks", "lottery_engine")
# The checkpoint format of the one engine (chunks of steps under manual optimization). Absent: written before it.
ENGINE = 2
AUTOMATIC = "epoch_loop.automatic_optimization.optim_progress"
MANUAL = "epoch_loop.manual_optimization.optim_step_progress"


def _per_replica(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0


def check_checkpoint(path: Path) -> int:
    """Read a checkpoint safely before Lightning does, so a truncated or code-carrying file is a clear error naming
    the file rather than a deep unpickling traceback; returns the step it was saved at. The tensors are mapped, not
    read (mmap), so this look costs little beside the full read that follows."""
    state = artifacts.load_torch(path, "checkpoint", mmap=True)
    missing = [k for k in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step") if k not in state]
    if missing:
        raise artifacts.ArtifactError(
            f"checkpoint {path} lacks {missing}: it is not a full training state written by this program. Move it "
            "aside and re-run (a level's last.ckpt: the level restarts; rewind.ckpt: delete level_0 to retrain it)."
        )
    return int(state["global_step"])


def convert(checkpoint: dict, path: Path | str) -> dict:
    """A checkpoint in the one engine's format. One written before it counted its optimizer steps under Lightning's
    automatic optimization, which the chunked loop (manual optimization) does not read: a resume would restart at
    step 0. Its count moves to the manual loop's counter, which is all that differs (tests/test_stack_fit.py)."""
    version = checkpoint.get("lottery_engine")
    if version == ENGINE:
        return checkpoint
    if version is not None:
        raise artifacts.ArtifactError(
            f"checkpoint {path} was written by training engine version {version}; this program reads version "
            f"{ENGINE}. Finish the run with the version that wrote it, or move the file aside to retrain that part."
        )
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    automatic, manual = fit_loop.get(AUTOMATIC), fit_loop.get(MANUAL)
    steps = None if automatic is None else automatic.get("optimizer", {}).get("step")
    if steps is None or manual is None or int(steps["total"]["completed"]) != int(checkpoint["global_step"]):
        raise artifacts.ArtifactError(
            f"checkpoint {path} predates the one training engine and its step counters are not Lightning 2's; "
            "move it aside to retrain that part (a level's last.ckpt: the level restarts; rewind.ckpt: delete "
            "level_0 to retrain it)"
        )
    manual["total"] = {k: steps["total"][k] for k in ("ready", "completed")}
    manual["current"] = {k: steps["current"][k] for k in ("ready", "completed")}
    checkpoint["lottery_engine"] = ENGINE
    return checkpoint


def stack_checkpoints(checkpoints: Sequence[dict], stacked: bool = True) -> dict:
    """One stack checkpoint from the replicas' own checkpoints, which must be at one step. `stacked=False` (a
    `single` stack): the one replica's checkpoint itself."""
    steps = {int(c["global_step"]) for c in checkpoints}
    assert len(steps) == 1, f"a stack's replicas start from one step, not {sorted(steps)}"
    first = checkpoints[0]
    out = {key: first[key] for key in SHARED if key in first}
    if stacked:
        out["state_dict"] = {k: torch.stack([c["state_dict"][k] for c in checkpoints]) for k in first["state_dict"]}
    else:
        out["state_dict"] = first["state_dict"]
    optimizers = []
    for j, opt in enumerate(first["optimizer_states"]):
        state = {}
        for idx, entry in opt["state"].items():
            values = [c["optimizer_states"][j]["state"][idx] for c in checkpoints]
            state[idx] = {
                k: torch.stack([v[k] for v in values]) if stacked and _per_replica(x) else x for k, x in entry.items()
            }
        optimizers.append({"state": state, "param_groups": opt["param_groups"]})
    out["optimizer_states"] = optimizers
    out["lottery_stack"] = [c.get("lottery", {}) for c in checkpoints]
    return out


def split_checkpoint(stack: dict, i: int, stacked: bool = True) -> dict:
    """Replica i's own checkpoint out of a stack checkpoint."""
    take = (lambda x: x[i].clone()) if stacked else (lambda x: x)
    solo = {key: stack[key] for key in SHARED if key in stack}
    solo["state_dict"] = {k: take(v) for k, v in stack["state_dict"].items()}
    solo["optimizer_states"] = [
        {
            "state": {
                idx: {k: take(x) if _per_replica(x) else x for k, x in entry.items()}
                for idx, entry in opt["state"].items()
            },
            "param_groups": opt["param_groups"],
        }
        for opt in stack["optimizer_states"]
    ]
    solo["lottery"] = stack["lottery_stack"][i]
    return solo


def save_split(trainer: L.Trainer, paths: Sequence[Path | None], scratch: Path, stacked: bool) -> None:
    """Save the stack's state and write each replica's checkpoint to its path (None: skip), each atomically. Under
    DDP every rank takes part in the save (Lightning's save is collective); rank 0 alone writes the replicas' files."""
    trainer.save_checkpoint(scratch, weights_only=False)
    if not trainer.is_global_zero:
        return
    stack = torch.load(scratch, map_location="cpu", weights_only=True)
    for i, path in enumerate(paths):
        if path is None:
            continue
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(split_checkpoint(stack, i, stacked), tmp)
        os.replace(tmp, path)
    scratch.unlink(missing_ok=True)


def load_stacked(paths: Sequence[Path], scratch: Path, stacked: bool) -> Path:
    """Stack the replicas' checkpoints into one file the Trainer restores from; returns its path."""
    stack = stack_checkpoints([convert(artifacts.load_torch(p, "checkpoint"), p) for p in paths], stacked)
    torch.save(stack, scratch)
    return scratch


class StackBatches:
    """Every replica's batch of a step, stacked (N, B, ...): replica i's is its own StepBatches' (its seed's data
    order), so a replica sees exactly the batches it would alone. When every replica reads the same tensors without
    augmentation (the seeds of one config: one split), a step's batches are one gather of the replicas' stacked
    indices instead of one gather each and a stack, the same values in fewer operations. Under DDP (one replica)
    each process takes its slice of the global batch (examples rank, rank + world, ...)."""

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
        rank, world = distributed_rank()
        caches: list[dict] = [{} for _ in self.batches]
        x, y = self.batches[0].x, self.batches[0].y
        for step in range(self.start_step(), self.total_steps):
            if self.shared:
                idx = torch.stack([b.indices(step, c)[rank::world] for b, c in zip(self.batches, caches, strict=True)])
                yield x[idx], y[idx]
                continue
            pairs = [b.batch(step, c, rank, world) for b, c in zip(self.batches, caches, strict=True)]
            yield torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


class StepChunks:
    """A fit's steps in chunks, each the steps up to the next point where something must happen (`next_stop`: an
    evaluation, a log line, a checkpoint, the rewind capture, a callback's period, the end). One chunk is one
    Lightning training step of K optimizer steps (LevelModule.training_step), so Lightning's per-step machinery runs
    once per chunk; each step's batches are still StackBatches' (a function of seed and step), so a chunk's size
    changes how fast a fit runs, never what it computes."""

    def __init__(self, batches: StackBatches, next_stop) -> None:
        self.batches, self.next_stop = batches, next_stop

    def __len__(self) -> int:
        count, step = 0, 0
        while step < self.batches.total_steps:
            step, count = self.next_stop(step), count + 1
        return count

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        steps = iter(self.batches)
        step = self.batches.start_step()
        while step < self.batches.total_steps:
            end = self.next_stop(step)
            yield [next(steps) for _ in range(end - step)]
            step = end


class LevelCheckpoints(L.Callback):
    """Each replica's `last.ckpt` every `every` steps and once `seconds` of training have passed since the last save
    (or the fit's start), and its rewind point at step `rewind_step` when `rewinds` is given (the trunk's level 0; step
    0 is saved before the first update). A time-chosen step is as exact as a fixed one: the saved state is the whole
    training state at that step, and a level resumes bit for bit from any step (tests/test_resume.py); only which
    steps were saved varies between runs.

    Under DDP every rank must save together, so rank 0's clock decides, broadcast at each evaluation step only (one
    small collective per evaluation, not per step)."""

    def __init__(
        self,
        resumes: Sequence[Path],
        scratch: Path,
        total_steps: int,
        stacked: bool,
        every: int | None = None,
        seconds: float | None = None,
        rewinds: Sequence[Path] | None = None,
        rewind_step: int = 0,
        series: Mapping[int, Sequence[Path]] | None = None,
    ) -> None:
        self.resumes, self.rewinds = list(resumes), None if rewinds is None else list(rewinds)
        self.scratch = Path(scratch)
        self.total_steps = total_steps
        self.stacked = stacked
        self.every = None if every is None else max(1, every)
        self.seconds = seconds
        self.rewind_step = rewind_step
        self.series = dict(series or {})  # step -> each replica's series point (train.save_at; level 0 only)
        self._last = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._last = time.perf_counter()  # after any restore: the clock counts training, not start-up
        if self.rewinds is not None and self.rewind_step == 0 and trainer.global_step == 0:
            save_split(trainer, self.rewinds, self.scratch, self.stacked)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.rewinds is not None and self.rewind_step > 0 and step == self.rewind_step:
            save_split(trainer, self.rewinds, self.scratch, self.stacked)
        if step in self.series:  # a whole checkpoint: the weights at this step, and a run could resume from it
            for path in self.series[step]:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            save_split(trainer, self.series[step], self.scratch, self.stacked)
        if step >= self.total_steps:
            return  # the finished level writes its weights; a checkpoint here would only be deleted
        due = self.every is not None and step % self.every == 0
        if self.seconds is not None and not due:
            due = self._clock_due(trainer, pl_module, step)
        if due:
            save_split(trainer, self.resumes, self.scratch, self.stacked)
            self._last = time.perf_counter()

    def _clock_due(self, trainer, pl_module, step: int) -> bool:
        late = time.perf_counter() - self._last >= self.seconds
        if trainer.world_size == 1:
            return late
        if step % getattr(pl_module, "eval_every", 1):
            return False
        return bool(trainer.strategy.broadcast(late, src=0))
