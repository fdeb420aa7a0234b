"""Data-parallel training of a level (trainer=ddp) on Lightning's DDP strategy, in one of two modes.

**Spawned workers** (one machine: `trainer=ddp trainer.devices=N`). The IMP driver is one process that prunes,
rewinds and writes artifacts between fits. With Lightning's default DDP launcher every rank would re-run the whole
command (and the driver with it); with spawned workers only `Trainer.fit` is distributed. So the mask and the rewind
point are made once, in the driver, and reach every rank inside the pickled LightningModule; every rank applies the
same mask after every step; rank 0's trained weights come back to the driver (Lightning's spawn launcher), which alone
writes the level's artifacts. Inside a fit, the resume checkpoints are written by rank 0 only (checkpoints.save_split).

**Ranks started by a cluster launcher** (`torchrun`, or `srun` on SLURM; `trainer.num_nodes` machines of
`trainer.devices` processes each). Every rank runs the `lottery` command, but only rank 0 is the IMP driver: it loads
the data, prunes, rewinds and writes every file, as the spawned mode's driver does. The other ranks follow: before
each fit rank 0 sends them what Lightning's spawn launcher would pickle to its workers (the Trainer, the
LightningModule and the checkpoint to resume from) over a gloo group of the cluster's process group, and all ranks
run `Trainer.fit` together (Lightning's torchelastic or SLURM environment gives each its rank; the processes are the
cluster's, so Lightning launches none). After the job rank 0 sends "stop" (or "failed", if the driver raised), and
the followers return. A fit's resume checkpoint, written by rank 0, is read by every rank from the shared `root`.

Each rank trains on its own slice of every global batch (lottery/data/batches.py), so `train.batch_size` stays the
global batch and a DDP run follows the single-process run up to floating-point summation order; the two modes with
the same number of ranks sum in the same order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

STRATEGIES = ("auto", "ddp")
FIT, STOP, FAILED = "fit", "stop", "failed"


@dataclass(frozen=True)
class ClusterLaunch:
    """This process as one of `world_size` ranks that a cluster launcher started (`launcher`: torchrun or srun)."""

    launcher: str
    rank: int
    world_size: int


def cluster_launch() -> ClusterLaunch | None:
    """The cluster launch this process is part of, from Lightning's environment detection; None when no launcher
    started several ranks (a plain command, or a SLURM job of one task: submitit's jobs under launcher=slurm)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for name, kind in (("torchrun", TorchElasticEnvironment), ("srun", SLURMEnvironment)):
        if kind.detect():
            env = kind()
            if env.world_size() > 1:
                return ClusterLaunch(name, env.global_rank(), env.world_size())
    return None


def strategy(trainer_cfg: Any) -> Any:
    """Lightning's strategy argument for trainer.strategy."""
    if trainer_cfg.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        if cluster_launch() is not None:
            return DDPStrategy()  # the cluster started every rank: Lightning's launcher starts none
        from lottery.training.spawned import SpawnedDDP  # Lightning's strategies load only when DDP is asked for

        return SpawnedDDP(start_method="spawn")
    return "auto"


# ---- the cluster mode's messages between rank 0 (the driver) and the followers
_control: list[Any] = []  # the gloo group the messages travel on, once joined


def join(trainer_cfg: Any) -> None:
    """Join the cluster's process group (the one Lightning's DDP then uses: it skips its own initialisation when one
    exists) and a gloo group for the driver's messages, which are pickled Python objects (NCCL carries tensors only).
    Every rank calls this before anything else that could fail on one rank alone."""
    import torch.distributed as dist
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if _control:
        return
    env = TorchElasticEnvironment() if TorchElasticEnvironment.detect() else SLURMEnvironment()
    if not dist.is_initialized():
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
        backend = "nccl" if trainer_cfg.accelerator in ("gpu", "cuda") else "gloo"
        dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size())
    # No collective timeout on the messages: a follower waits while rank 0 works between fits (pruning, reports, a
    # branch's analysis), however long that takes; a rank 0 that dies ends the wait at once (its sockets close).
    _control.append(dist.new_group(backend="gloo", timeout=timedelta(days=7)))


def _send(message: tuple) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list([message], src=0, group=_control[0])


def _receive() -> tuple:
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0, group=_control[0])
    return box[0]


def fit(trainer: Any, module: Any, ckpt_path: Any) -> None:
    """Trainer.fit; in the cluster mode rank 0 first sends the fit to the followers, who run it beside it."""
    if _control:
        _send((FIT, trainer, module, ckpt_path))
    trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)


def lead(job: Callable[[], Any]) -> Any:
    """Rank 0: run the job (the IMP driver), then release the followers, with "failed" if it raised."""
    try:
        result = job()
    except BaseException:
        # Best effort: when the job failed because a rank died, this message cannot travel either, and the job's
        # own error is the one to report.
        with contextlib.suppress(Exception):
            _send((FAILED,))
        raise
    _send((STOP,))
    return result


def follow(launch: ClusterLaunch) -> None:
    """A rank other than 0: run every fit rank 0 sends until it stops; raise if rank 0's job failed."""
    while True:
        message = _receive()
        if message[0] == FIT:
            _, trainer, module, ckpt_path = message
            trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
            del trainer, module
        elif message[0] == STOP:
            return
        else:
            raise RuntimeError(
                f"rank 0 of this {launch.launcher} launch stopped with an error (its output says which); rank "
                f"{launch.rank} stops too"
            )
