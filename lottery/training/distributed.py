"""Data-parallel training of a level (trainer=ddp) on Lightning's DDP strategy, in one of two modes.

**Spawned workers** (one machine: `trainer=ddp trainer.devices=N`). The IMP driver is one process that prunes,
rewinds and writes artifacts between fits. With Lightning's default DDP launcher every rank would re-run the whole
command (and the driver with it); with spawned workers only `Trainer.fit` is distributed. So the mask and the rewind
point are made once, in the driver, and reach every rank inside the pickled LightningModule; every rank applies the
same mask after every step; rank 0's trained weights come back to the driver (Lightning's spawn launcher), which alone
writes the level's artifacts. Inside a fit, the resume checkpoints are written by rank 0 only (checkpoints.save_split).

**Ranks started by a cluster launcher** (`torchrun`, or `srun` on SLURM; `trainer.num_nodes` machines of
`trainer.devices` processes each). Every rank runs the `lottery` command, but only rank 0 is the IMP driver: it loads
the data, prunes, rewinds and writes every file, as the spawned mode's driver does. The other ranks follow: each
builds the run's Setup from the same config once, reading only (lottery/setup.build: data, networks, paths), and
before each fit rank 0 sends them the fit's order (fit.order_of: the level, its folder, mask and start, the names of
its callbacks, where rank 0 put the start checkpoint) over a gloo group of the cluster's process group; each follower
rebuilds the same Trainer and LevelModule from it (fit.follow_fit) and all ranks run `Trainer.fit` together
(Lightning's torchelastic or SLURM environment gives each its rank; the processes are the cluster's, so Lightning
launches none). After the job rank 0 sends "stop" (or "failed", if the driver raised), and the followers return. A
fit's start and resume checkpoints, written by rank 0, are read by every rank from the shared `root`
(`weights_only`).

**Every wait is bounded** by `trainer.wait_timeout` seconds (30 minutes by default): the process group's collectives
(a fit's gradients) and the messages alike. A rank that waits longer stops with a message naming itself, what it
waited for and the setting, so a rank 0 lost without closing its sockets, a frozen follower, or a rank 0 stuck on a
trunk lock ends every other rank within the bound instead of holding a cluster's GPUs idle. A rank that dies outright
closes its sockets and the others stop at once.

Why rank 0 drives and the others follow, rather than Lightning's usual shape (every rank runs the same deterministic
loop, only rank 0 writes, ranks meet at barriers): the loop between fits is not one that every rank can repeat
cheaply and identically. It reads and writes the shared output folder (locks, claims, resume decisions from files a
crashed run left), scores units on the scoring prompts (structured runs), and runs reports and branch analyses; on
every rank these would race on the shared `root` or need a barrier after each, and any difference between ranks (a
file seen by one node's filesystem cache and not another's) would silently desynchronise the masks. One driver makes
each decision once; the followers only train what they are sent.

**No data travels, and nothing arbitrary is unpickled.** A message is plain values and tensors (masks, start
weights) written by `torch.save` and read by `torch.load(weights_only=True)`, which refuses any other object: a
follower never unpickles code from the network. Each follower's data is its own, loaded from the config (the data is
a function of the config, so every rank carves the same splits), and checked against a digest of rank 0's tensors
that travels with every fit, so a machine whose dataset files differ stops with a message rather than training on
other data. (Before, rank 0 pickled the Trainer and module to every follower for every fit: float32 CIFAR-10 was
about 0.7 GB per fit per follower, and the followers unpickled whatever came.)

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


_wait: list[float] = []  # trainer.wait_timeout of this launch, once joined


class WaitTimeout(RuntimeError):
    """A rank of a cluster launch waited longer than trainer.wait_timeout for another."""


def join(trainer_cfg: Any) -> None:
    """Join the cluster's process group (the one Lightning's DDP then uses: it skips its own initialisation when one
    exists) and a gloo group for the driver's messages (byte tensors: NCCL would need them on a GPU).
    Every rank calls this before anything else that could fail on one rank alone."""
    import torch.distributed as dist
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if _control:
        return
    env = TorchElasticEnvironment() if TorchElasticEnvironment.detect() else SLURMEnvironment()
    bound = timedelta(seconds=trainer_cfg.wait_timeout)
    if not dist.is_initialized():
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
        backend = "nccl" if trainer_cfg.accelerator in ("gpu", "cuda") else "gloo"
        # the fits' collectives wait at most wait_timeout for the slowest rank (Lightning's DDP uses this group)
        dist.init_process_group(backend, rank=env.global_rank(), world_size=env.world_size(), timeout=bound)
    # The messages wait as long: a follower waits while rank 0 works between fits (pruning, reports, a branch's
    # analysis), so wait_timeout must cover the longest such stretch; a rank 0 that dies ends the wait at once.
    _control.append(dist.new_group(backend="gloo", timeout=bound))
    _wait.append(trainer_cfg.wait_timeout)


def waited(what: str, err: BaseException) -> WaitTimeout:
    """The error a rank stops with when a wait for another rank failed: timed out, or the other's sockets closed."""
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else "?"
    return WaitTimeout(
        f"rank {rank} waited for {what} and it did not come within trainer.wait_timeout={_wait[0]:g} s, or that "
        f"rank's connection closed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the other "
        "rank is lost or frozen: see its output. If rank 0's work between fits is longer than that, raise "
        "trainer.wait_timeout"
    )


def encode(message: dict) -> Any:
    """A message as a uint8 tensor: torch.save of plain values and tensors."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(message, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def decode(data: Any) -> dict:
    """A message back from its bytes with torch.load(weights_only=True): plain values and tensors only; anything
    else (a pickled class, a function) is refused, never run."""
    import io

    import torch

    return torch.load(io.BytesIO(data.numpy().tobytes()), weights_only=True)


def _send(message: dict) -> None:
    import torch
    import torch.distributed as dist

    data = encode(message)
    try:
        dist.broadcast(torch.tensor([data.numel()], dtype=torch.int64), src=0, group=_control[0])
        dist.broadcast(data, src=0, group=_control[0])
    except (RuntimeError, OSError) as err:  # gloo's timeout and closed-connection errors are RuntimeErrors
        raise waited(f"every follower to take the message {message['kind']!r}", err) from err


def _receive() -> dict:
    import torch
    import torch.distributed as dist

    try:
        size = torch.zeros(1, dtype=torch.int64)
        dist.broadcast(size, src=0, group=_control[0])
        data = torch.empty(int(size), dtype=torch.uint8)
        dist.broadcast(data, src=0, group=_control[0])
    except (RuntimeError, OSError) as err:
        raise waited("rank 0's next message (a fit, or the end of the job)", err) from err
    return decode(data)


def _fit(trainer: Any, module: Any, ckpt_path: Any) -> None:
    try:
        trainer.fit(module, ckpt_path=ckpt_path, weights_only=True)
    except (RuntimeError, OSError) as err:
        if _control and _is_wait(err):
            raise waited("the other ranks inside a fit (their gradients or a checkpoint's collective)", err) from err
        raise


def _is_wait(err: BaseException) -> bool:
    """Whether a fit failed waiting on another rank (gloo/NCCL timeouts and closed connections), not on its own."""
    text = f"{type(err).__name__} {err}".lower()
    return any(k in text for k in ("timed out", "timeout", "connection closed", "connection reset", "distbackend"))


def fit(trainer: Any, module: Any, ckpt_path: Any, order: Callable[[], dict]) -> None:
    """Trainer.fit; in the cluster mode rank 0 first sends the fit's order (`order()`, fit.order_of) and the digest
    of its data to the followers, who rebuild the fit and run it beside it."""
    if _control:
        _send({"kind": FIT, "order": order(), "digest": digest(data_of(module))})
    _fit(trainer, module, ckpt_path)


DATA = ("val_data", "test_data")  # the module's (x, y) pairs; its StepBatches hold the training split


def data_of(module: Any) -> list[Any]:
    """The dataset tensors a fit's module holds, in a fixed order."""
    tensors = [t for key in DATA if getattr(module, key) is not None for t in getattr(module, key)]
    return tensors + [t for b in module.batches for t in (b.x, b.y)]


def digest(tensors: list[Any]) -> str:
    """A sha256 of the tensors' shapes, dtypes and exact bytes."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return h.hexdigest()


def check_data(module: Any, expected: str, rank: int) -> None:
    """A follower's rebuilt fit trains on the data rank 0's does (the digests agree)."""
    if digest(data_of(module)) != expected:
        raise RuntimeError(
            f"rank {rank} loaded other data than rank 0 from the same config (their digests differ): every machine "
            "needs the same dataset files under data.root (and the same text for data.path); copy rank 0's"
        )


def lead(job: Callable[[], Any]) -> Any:
    """Rank 0: run the job (the IMP driver), then release the followers, with "failed" if it raised."""
    try:
        result = job()
    except WaitTimeout:
        raise  # a rank is lost or frozen: telling the followers would wait for it once more
    except BaseException:
        # Best effort: when the job failed because a rank died, this message cannot travel either, and the job's
        # own error is the one to report.
        with contextlib.suppress(Exception):
            _send({"kind": FAILED})
        raise
    _send({"kind": STOP})
    return result


def follow(launch: ClusterLaunch, rebuild: Callable[[dict], tuple[Any, Any, Any]]) -> None:
    """A rank other than 0: run every fit rank 0 sends until it stops, each rebuilt by `rebuild(order)` (the
    Trainer, module and checkpoint path: fit.follow_fit on this rank's own Setup); raise if rank 0's job failed."""
    while True:
        message = _receive()
        if message["kind"] == FIT:
            trainer, module, ckpt_path = rebuild(message["order"])
            check_data(module, message["digest"], launch.rank)
            _fit(trainer, module, ckpt_path)
            del trainer, module
        elif message["kind"] == STOP:
            return
        else:
            raise RuntimeError(
                f"rank 0 of this {launch.launcher} launch stopped with an error (its output says which); rank "
                f"{launch.rank} stops too"
            )
