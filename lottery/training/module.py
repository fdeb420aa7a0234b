"""The LightningModule of one IMP level: a stack of N >= 1 replicas (lottery/training/stack.py) trained as one, each
with its own mask, evaluations, best-so-far metrics and early-stopping point. A solo run is N = 1 of this same module,
so a seed's result does not depend on whether it trained alone or beside other seeds (tests/test_stack_fit.py).

The networks come in as an argument (not through save_hyperparameters: the resolved config saved beside every result
is what rebuilds them). The loss is the sum of the replicas' own mean losses, so replica i's gradient is its own
loss's gradient alone; Adam and SGD (momentum, weight decay) act element-wise, so one optimizer over the stacked
parameters is N independent optimizers (torch's unfused implementations: the fused kernels split their work by the
tensor's length, so a replica's rounding would depend on N). Masks are enforced after every optimizer step by a
multiply with the float mask (exact zeros wherever the weights are finite; on stacked tensors several times cheaper
than a masked fill), and by a masked fill, which also clears an inf or nan, at the end of the fit and whenever a
checkpoint is loaded. Momentum, Adam moments and weight decay would otherwise revive pruned weights.

Validation runs inside the training loop at fixed optimizer steps (every `eval_every` steps and at the last step)
rather than through Lightning's validation loop: the evaluation points then depend only on the global step, so a
level rewound to step k or resumed mid-way evaluates at the same steps as an uninterrupted one, and one evaluation
is a forward pass over the in-memory split with no DataLoader.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.functional.classification import multiclass_accuracy

from lottery.core import masks as M
from lottery.core.artifacts import PREFIX
from lottery.data.batches import StepBatches
from lottery.data.tasks import Task
from lottery.training.checkpoints import ENGINE, StackBatches, StepChunks
from lottery.training.flat import FlatParams, flattenable, state_flat
from lottery.training.stack import Stack, repeat_rows

# A replica's results beside its weights, kept in its checkpoints; under DDP they travel back from the spawned workers
# in callback_metrics.
PROGRESS = (
    "best_val_acc",
    "best_val_step",
    "last_val_acc",
    "best_val_loss",
    "early_stop_step",
    "early_stop_test_acc",
    "train_seconds",
)
STEPS = ("best_val_step", "early_stop_step")  # PROGRESS entries that are integers
EVAL_CHUNK = 8192  # examples per replica per forward pass of an evaluation


class LevelModule(L.LightningModule):
    def __init__(
        self,
        stack: Stack,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_lambda: Callable[[int], float],
        masks: Sequence[Mapping[str, torch.Tensor]],
        val_data: tuple[torch.Tensor, torch.Tensor],
        num_classes: int,
        total_steps: int,
        eval_every: int,
        log_every: int = 50,
        start_weights: Sequence[Mapping[str, torch.Tensor]] | None = None,
        resume_progress: bool = False,
        task: Task | None = None,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        fresh_optimizer: bool = False,
        loggers: Sequence[Sequence[L.pytorch.loggers.Logger]] = (),
        on_evaluate: Sequence[Callable[..., None] | None] = (),
        batches: Sequence[StepBatches] = (),
        periods: Sequence[int | None] = (),
        marks: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.stack = stack
        self.size = stack.size
        self.network = stack.network
        # Masks in the network's own shapes: stacked on a leading replica dimension (or plain for a `single` stack).
        self.mask = _stack_tensors(masks, stack.stacked)
        # (parameter, float mask) of the tensors with pruned entries, found on first use (see enforce_mask).
        self._keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.make_optimizer = optimizer
        self.lr_lambda = lr_lambda
        self.val_data, self.test_data = val_data, test_data
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.eval_every = max(1, eval_every)
        self.log_every = max(1, log_every)
        # Weights swapped in when the start checkpoint loads: a control's fresh initialisation, or for LR rewinding the
        # weights the mask was drawn from.
        self.start_weights = None if start_weights is None else _stack_tensors(start_weights, stack.stacked)
        # True when resuming this level's own checkpoint: keep its best-so-far metrics; False when the checkpoint is
        # the rewind point of level 0, whose metrics belong to another level.
        self.resume_progress = resume_progress
        # random_reinit: the rewind point's step, LR schedule position and data order with a fresh optimizer state.
        self.fresh_optimizer = fresh_optimizer
        # Loss and metrics of sequence tasks (lottery/data/tasks.py); None is classification: cross-entropy, accuracy.
        self.task = task
        n = self.size
        self.replica_loggers = [list(group) for group in loggers] or [[] for _ in range(n)]
        # Called as on_evaluate[i](step, acc, loss) after each evaluation (train.print_every_eval prints a line).
        self.on_evaluate = list(on_evaluate) or [None] * n
        self.best_val_acc, self.best_val_step = [float("-inf")] * n, [-1] * n
        # The LTH paper's early-stopping iteration: the evaluation step of minimum validation loss, and the test
        # accuracy there. The test split is scored only at evaluations where some replica's validation loss reached
        # a new minimum (it never selects anything).
        self.best_val_loss, self.early_stop_step = [float("inf")] * n, [-1] * n
        self.early_stop_test_acc, self.last_val_acc = [float("nan")] * n, [float("nan")] * n
        self.train_seconds = [0.0] * n
        self.processes = 1  # DDP processes that trained the level (their weights checked identical)
        # Set again when training starts; from construction until then so that a checkpoint saved before the
        # module's own on_train_start (the step-0 rewind point, saved by a callback first) records ~0 s, not uptime.
        self._clock = time.perf_counter()
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self.fit_device = torch.device("cpu")  # where the level trains (set by the fit); the test set is scored there
        self.threads: int | None = None  # trainer.threads of every process that trains it (set by the fit)
        # Each replica's batches (its seed's data order). The loader is made in train_dataloader, where a DDP worker
        # makes its own: it reads the Trainer's step when iteration begins, after a checkpoint restored it.
        self.batches = list(batches)
        # Where chunks of steps end besides evaluations and log lines: checkpoint and callback periods (`periods`),
        # the rewind capture (`marks`); manual optimization runs a chunk per Lightning step (training_step).
        self.periods = tuple(p for p in periods if p)
        self.marks = tuple(marks)
        self.automatic_optimization = False
        self._direct: tuple | None = None  # (optimizer, scheduler, step counter) for plain steps (on_train_start)
        self._flat: FlatParams | None = None  # the parameters' flat buffer, when the fit uses one (flat_wanted)

    # ---- the replicas
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Replica-major inputs (N * B, ...) to replica-major outputs."""
        return self.stack.forward(x)

    def replica_losses(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Each replica's mean loss on its own batch: xs is (N, B, ...), the batches of the N replicas."""
        n = self.size
        logits = self.stack.forward(xs.reshape(-1, *xs.shape[2:]))
        if self.task is None:
            return F.cross_entropy(logits, ys.reshape(-1), reduction="none").view(n, -1).mean(1)
        per = logits.view(n, -1, *logits.shape[1:])
        return torch.stack([self.task.loss(per[i], ys[i]) for i in range(n)])

    def replica_weights(self, i: int) -> dict[str, torch.Tensor]:
        """Replica i's state dict (parameters and buffers), as plain copies."""
        return self.stack.replica_state(self.network.state_dict(), i)

    def prunable_of(self, i: int) -> dict[str, torch.Tensor]:
        """Replica i's prunable weights (the mask's tensors), as views into the stack."""
        params = self.stack.params()
        return {name: params[name].detach()[i] for name in self.mask}

    def optimizer_state(self) -> dict:
        """The optimizer's state dict in the per-parameter form checkpoints hold (whether or not a flat buffer
        trains)."""
        state = self.trainer.optimizers[0].state_dict()
        return state if self._flat is None else self._flat.state_per_param(state)

    def train_dataloader(self) -> StepChunks:
        return StepChunks(
            StackBatches(self.batches, start_step=lambda: self.trainer.global_step), next_stop=self.next_stop
        )

    def flat_wanted(self) -> bool:
        """Whether this fit trains on a flat buffer (lottery/training/flat.py): one process, and parameters a buffer
        can back. Decided the same way when a checkpoint loads (before the optimizer exists) and when it is made."""
        return self.trainer.world_size == 1 and flattenable(list(self.network.parameters()))

    def configure_optimizers(self):
        # Called after the network is on its device (and its checkpointed weights loaded), so the buffer is there too.
        params = list(self.network.parameters())
        self._flat = FlatParams(params) if self.flat_wanted() else None
        optimizer = self.make_optimizer([self._flat.flat] if self._flat is not None else params)
        scheduler = LambdaLR(optimizer, self.lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, chunk, batch_idx):
        """The optimizer steps of one chunk: the steps between two points where something must happen (an
        evaluation, a log line, a checkpoint, the rewind capture, the end), run here in one call rather than one
        Lightning step each, so its per-step machinery (hooks, progress bookkeeping) runs once per chunk
        (lottery/training/checkpoints.py: StepChunks)."""
        for xs, ys in chunk:
            self.train_step(xs, ys)
        if self._flat is not None and not self._flat.attached():
            raise RuntimeError("a parameter's gradient left the flat buffer: the optimizer would see no gradient")
        step = self.trainer.global_step
        if step % self.log_every == 0 or step == self.total_steps:
            # The training loss is summed on the device and reported as a mean every `log_every` steps.
            means = (self._loss_sum / self._loss_count).tolist()
            self._loss_sum, self._loss_count = None, 0
            self.log("train/loss", sum(means) / len(means), on_step=True, on_epoch=False, prog_bar=True, logger=False)
            for group, mean in zip(self.replica_loggers, means, strict=True):
                for logger in group:
                    logger.log_metrics({"train/loss": mean}, step=step)
        # Evaluating here, before every callback's on_train_batch_end, means a checkpoint saved at this step already
        # holds its result, so a resumed level sees exactly the evaluations of an uninterrupted one.
        self.maybe_evaluate(step)

    def train_step(self, xs: torch.Tensor, ys: torch.Tensor) -> None:
        """One optimizer step of every replica on its own batch, then the masks."""
        losses = self.replica_losses(xs, ys)
        if self._direct is None:
            optimizer, scheduler = self.optimizers(), self.lr_schedulers()
            optimizer.zero_grad(set_to_none=self._flat is None)
            # A sum, not a mean: replica i's gradient is exactly its own loss's gradient, whatever N.
            self.manual_backward(losses.sum())
            optimizer.step()
        else:
            optimizer, scheduler, progress = self._direct
            # A flat buffer's gradient is zeroed in place: the parameters' gradients are views into it.
            optimizer.zero_grad(set_to_none=self._flat is None)
            losses.sum().backward()
            # What Lightning's optimizer wrapper does around a step, less its hooks: count it (global_step).
            progress.increment_ready()
            optimizer.step()
            progress.increment_completed()
        scheduler.step()
        self.enforce_mask()
        detached = losses.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_count += 1

    def next_stop(self, step: int) -> int:
        """The step after `step` where the current chunk must end (see StepChunks)."""
        if self.trainer is not None and self.trainer.world_size > 1:
            return step + 1  # DDP pairs every backward with a forward of the wrapped module: one step per call
        ends = [self.total_steps, *(m for m in self.marks if m > step)]
        ends += [(step // p + 1) * p for p in (self.eval_every, self.log_every, *self.periods)]
        return min(ends)

    @torch.no_grad()
    def enforce_mask(self) -> None:
        if self._keep is None or any(p.device != keep.device for p, keep in self._keep):
            params = dict(self.network.named_parameters())
            self._keep = [
                (params[n], m.to(params[n].device, params[n].dtype)) for n, m in self.mask.items() if not bool(m.all())
            ]
            if self._flat is not None and self._keep:  # one multiply over the whole buffer
                index = {name: i for i, name in enumerate(params)}
                keep = {index[n]: m for n, m in self.mask.items() if not bool(m.all())}
                self._keep = [(self._flat.flat.data, self._flat.flat_mask(keep))]
        for p, keep in self._keep:
            p.mul_(keep)

    @torch.no_grad()
    def fill_mask(self) -> None:
        """Exact +0.0 at every pruned entry (clears -0.0 from the multiply, and an inf or nan)."""
        M.zero_(M.pruned_entries(dict(self.network.named_parameters()), self.mask))

    # ---- evaluation at fixed steps, per replica
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> list[tuple[float, float]]:
        """(accuracy, mean cross-entropy) of every replica on one whole split (evaluate_stack)."""
        return evaluate_stack(self.stack, x, y, self.num_classes, self.device, task=self.task)

    def setup(self, stage: str) -> None:
        # Spawned DDP workers start fresh interpreters with torch's default thread count: trainer.threads holds there
        # too, so their sums (a Linear stack's kernel choice among them, stack.py) are the driver's.
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def on_train_start(self) -> None:
        self._clock = time.perf_counter()
        if self._flat is not None:
            self._flat.attach()
        # One process without a gradient scaler (fp16's): the plain torch optimizer and backward, counted where
        # Lightning's manual loop counts its steps. Lightning's wrappers add per-step hooks and bookkeeping that
        # cost a tenth of a small network's step (benchmarks/imp_speed.py); under DDP or fp16 they are kept.
        plain = self.trainer.world_size == 1 and getattr(self.trainer.precision_plugin, "scaler", None) is None
        self._direct = None
        if plain:
            optimizer = self.optimizers().optimizer
            progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
            self._direct = (optimizer, self.lr_schedulers(), progress)

    def maybe_evaluate(self, step: int) -> None:
        if step % self.eval_every and step != self.total_steps:
            return
        scores = self.evaluate(*self.val_data)
        improved = []
        for i, (acc, loss) in enumerate(scores):
            self.last_val_acc[i] = acc
            if acc > self.best_val_acc[i]:  # strict: the earliest step reaching the best accuracy is the one recorded
                self.best_val_acc[i], self.best_val_step[i] = acc, step
            if loss < self.best_val_loss[i]:  # strict, likewise: the earliest step of the minimum validation loss
                self.best_val_loss[i], self.early_stop_step[i] = loss, step
                improved.append(i)
            # Straight to the loggers: self.log would only flush on Lightning's log_every_n_steps grid and could
            # drop an evaluation that falls between two of its points.
            for logger in self.replica_loggers[i]:
                logger.log_metrics({"val/acc": acc, "val/loss": loss}, step=step)
            if self.on_evaluate[i] is not None and self.trainer.is_global_zero:
                self.on_evaluate[i](step, acc, loss)
        if improved and self.test_data is not None:
            tests = self.evaluate(*self.test_data)
            for i in improved:
                self.early_stop_test_acc[i] = tests[i][0]

    def on_train_end(self) -> None:
        self.fill_mask()
        elapsed = time.perf_counter() - self._clock
        self.train_seconds = [s + elapsed for s in self.train_seconds]
        self._clock = time.perf_counter()
        # Spawned DDP workers send rank 0's weights and callback_metrics back to the driver, not module attributes:
        # the level's progress travels there (float64, so the values arrive exactly) and restore_progress reads it.
        if self.trainer.world_size > 1:
            self.check_ranks_identical()
            for key in PROGRESS:
                self.trainer.callback_metrics[f"lottery/{key}"] = torch.tensor(getattr(self, key), dtype=torch.float64)
            self.trainer.callback_metrics["lottery/processes"] = torch.tensor(self.processes, dtype=torch.float64)

    @torch.no_grad()
    def check_ranks_identical(self) -> None:
        """DDP invariant: every rank ends the level with the same masked weights, bit for bit (the same start, mask
        and averaged gradients). A digest of each rank's weights is gathered and compared; a mismatch is an error
        rather than a silently wrong level."""
        digest = torch.tensor(weights_digest(self.network), dtype=torch.int64, device=self.device)
        gathered = self.all_gather(digest).reshape(-1).cpu()
        if not bool((gathered == gathered[0]).all()):
            raise RuntimeError(f"DDP ranks ended the level with different weights (digests {gathered.tolist()})")
        self.processes = int(gathered.numel())

    def restore_progress(self, metrics: Mapping[str, torch.Tensor]) -> None:
        """Take the level's progress from a finished DDP fit's callback_metrics (absent for a fit in this process)."""
        for key in PROGRESS:
            if f"lottery/{key}" in metrics:
                values = metrics[f"lottery/{key}"].reshape(-1).tolist()
                setattr(self, key, [int(v) for v in values] if key in STEPS else values)
        if "lottery/processes" in metrics:
            self.processes = int(metrics["lottery/processes"])

    # ---- checkpoints: per-replica progress in, masked (or swapped) weights out
    def progress_of(self, i: int) -> dict:
        record = {key: getattr(self, key)[i] for key in PROGRESS}
        record["train_seconds"] += time.perf_counter() - self._clock
        return record

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lottery_stack"] = [self.progress_of(i) for i in range(self.size)]
        checkpoint["lottery_engine"] = ENGINE
        if self._flat is not None:  # checkpoints hold the per-parameter optimizer state, whichever form trained
            checkpoint["optimizer_states"] = [self._flat.state_per_param(s) for s in checkpoint["optimizer_states"]]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before Lightning loads the state dict, so this is where a level's starting weights are made:
        # rewind weights (or the swapped-in start weights) times the mask.
        state = checkpoint["state_dict"]
        if self.start_weights is not None:
            state = {**state, **{PREFIX + k: v for k, v in self.start_weights.items()}}
        checkpoint["state_dict"] = M.masked_state_dict(state, self.mask, prefix=PREFIX)
        replicas = checkpoint.get("lottery_stack", [])
        if self.resume_progress and replicas:
            for key in PROGRESS:
                setattr(self, key, [r.get(key, getattr(self, key)[i]) for i, r in enumerate(replicas)])
        if self.fresh_optimizer and not self.resume_progress:
            # Keep the param groups (the LR at the rewind step, as the schedule left it) and drop the per-parameter
            # state (momentum, Adam moments): an optimizer that has taken no step, at the schedule's position k.
            for optimizer_state in checkpoint["optimizer_states"]:
                optimizer_state["state"] = {}
            self.train_seconds = [r.get("train_seconds", 0.0) for r in replicas] or self.train_seconds
        if self.flat_wanted():  # the optimizer this fit makes holds the flat buffer alone
            count = len(list(self.network.parameters()))
            checkpoint["optimizer_states"] = [state_flat(s, count) for s in checkpoint["optimizer_states"]]


class LevelResult(nn.Module):
    """One replica of a finished fit, in the shape results.finish_level reads: its network (with the replica's
    weights), its progress and its final test accuracy and loss (`final`, measured by the stack that trained it)."""

    def __init__(self, network: nn.Module, module: LevelModule, i: int, final: tuple[float, float]) -> None:
        super().__init__()
        self.network = network
        if network is not module.network:
            network.load_state_dict(module.replica_weights(i))
        for key in PROGRESS:
            setattr(self, key, getattr(module, key)[i])
        self.test_acc, self.test_loss = final
        self.processes = module.processes
        self.stack_size = module.size
        self.fit_device = module.fit_device


def _stack_tensors(dicts: Sequence[Mapping[str, torch.Tensor]], stacked: bool) -> dict[str, torch.Tensor]:
    """Per-replica tensors (masks, start weights) in a stack's shapes: stacked on dim 0, or the one replica's own."""
    if not stacked:
        (only,) = dicts
        return {k: v.clone() for k, v in only.items()}
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def _score(logits: torch.Tensor, y: torch.Tensor, num_classes: int, task: Task | None) -> tuple[float, float]:
    if task is not None:
        return task.metrics(logits, y)
    acc = multiclass_accuracy(logits, y, num_classes=num_classes, average="micro", validate_args=False)
    return float(acc), float(F.cross_entropy(logits.float(), y))


@torch.no_grad()
def evaluate_stack(
    stack: Stack,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    device: torch.device | str = "cpu",
    task: Task | None = None,
) -> list[tuple[float, float]]:
    """(accuracy, mean cross-entropy) of every replica of a stack on one whole split, in eval mode, in chunks of
    EVAL_CHUNK examples per replica (with a task, lottery/data/tasks.py: its accuracy and loss). The one evaluation
    of the project's trained networks: a level's validation points, its early-stopping test accuracy, its final test
    accuracy and the analyses' networks outside a fit (evaluate_network) all pass here, so they agree to the bit.
    Every replica sees the same chunks at every N, so its numbers do too."""
    n = stack.size
    was_training = stack.network.training
    stack.network.eval()
    parts: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for j in range(0, len(x), EVAL_CHUNK):
        out = stack.forward(repeat_rows(x[j : j + EVAL_CHUNK].to(device), n))
        out = out.view(n, -1, *out.shape[1:])
        for i in range(n):
            parts[i].append(out[i])
    stack.network.train(was_training)
    y = y.to(device)
    return [_score(torch.cat(p), y, num_classes, task) for p in parts]


def evaluate_network(
    network: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    device: torch.device | str = "cpu",
    task: Task | None = None,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of one network outside a fit (an interpolated network, say), as a stack of one:
    the same bits as the level's own evaluation of those weights."""
    return evaluate_stack(Stack([network]), x, y, num_classes, device, task=task)[0]


def weights_digest(network: torch.nn.Module) -> int:
    """A 63-bit digest of the exact bytes of every parameter and buffer, to compare networks across processes."""
    h = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1
