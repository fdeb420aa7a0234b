"""The LightningModule of one IMP level: trains a masked network and keeps pruned weights exactly zero.

The network comes in as an argument (not through save_hyperparameters: the resolved config saved beside every
result is what rebuilds it). The mask is enforced by one in-place masked fill per pruned tensor after every optimizer
step, so the weights themselves hold exact zeros whatever the optimizer (momentum, Adam moments and weight decay
would otherwise revive them); fully dense tensors cost nothing.

Validation runs inside the training loop at fixed optimizer steps (every `eval_every` steps and at the last step)
rather than through Lightning's validation loop: the evaluation points then depend only on the global step, so a
level rewound to step k or resumed mid-way evaluates at the same steps as an uninterrupted one, and one evaluation
is a single forward pass over the in-memory split with no DataLoader.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

import lightning as L
import torch
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.functional.classification import multiclass_accuracy

from lottery.core import masks as M
from lottery.core.artifacts import PREFIX
from lottery.data.tasks import Task

# A level's results beside its weights; they travel back from spawned DDP workers in callback_metrics.
PROGRESS = (
    "best_val_acc",
    "best_val_step",
    "last_val_acc",
    "best_val_loss",
    "early_stop_step",
    "early_stop_test_acc",
    "train_seconds",
    "processes",
)
STEPS = ("best_val_step", "early_stop_step", "processes")  # PROGRESS entries that are integers


class LevelModule(L.LightningModule):
    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_lambda: Callable[[int], float],
        mask: Mapping[str, torch.Tensor],
        val_data: tuple[torch.Tensor, torch.Tensor],
        num_classes: int,
        total_steps: int,
        eval_every: int,
        log_every: int = 50,
        start_weights: Mapping[str, torch.Tensor] | None = None,
        resume_progress: bool = False,
        task: Task | None = None,
        test_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        fresh_optimizer: bool = False,
        on_evaluate: Callable[..., None] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.make_optimizer = optimizer
        self.lr_lambda = lr_lambda
        weights = M.prunable_weights(network)
        M.check_compatible(mask, weights)
        self.mask = {k: v.clone() for k, v in mask.items()}
        # Only tensors with pruned entries are touched after each step (see module docstring); found on first use.
        self._pruned: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.val_data = val_data
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.eval_every = max(1, eval_every)
        self.log_every = max(1, log_every)
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        # LR rewinding swaps in the previous level's trained weights when the rewind checkpoint is loaded.
        self.start_weights = dict(start_weights) if start_weights is not None else None
        # True when resuming this level's own checkpoint: keep its best-so-far metrics; False when the checkpoint is
        # the rewind point of level 0, whose metrics belong to another level.
        self.resume_progress = resume_progress
        self.best_val_acc = float("-inf")
        self.best_val_step = -1
        # The LTH paper's early-stopping iteration: the evaluation step of minimum validation loss, and the test
        # accuracy there. The test split is scored only when the validation loss reaches a new minimum (it never
        # selects anything), so a level costs at most one test evaluation per evaluation step.
        self.test_data = test_data
        self.best_val_loss = float("inf")
        self.early_stop_step = -1
        self.early_stop_test_acc = float("nan")
        # random_reinit: the rewind point's step, LR schedule position and data order with a fresh optimizer state.
        self.fresh_optimizer = fresh_optimizer
        self.last_val_acc = float("nan")
        self.train_seconds = 0.0
        self.processes = 1  # DDP processes that trained the level (their weights checked identical)
        # Set again when training starts; from construction until then so that a checkpoint saved before the
        # module's own on_train_start (the step-0 rewind point, saved by a callback first) records ~0 s, not uptime.
        self._clock = time.perf_counter()
        self.fit_device = torch.device("cpu")  # where the level trains (set by fit_level); the test set is scored there
        # Loss and metrics of sequence tasks (lottery/data/tasks.py); None is classification: cross-entropy, accuracy.
        self.task = task
        # Called as on_evaluate(step, acc, loss) after each evaluation (train.print_every_eval prints a line).
        self.on_evaluate = on_evaluate

    # ---- the model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.network.parameters())
        scheduler = LambdaLR(optimizer, self.lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.network(x), y) if self.task is None else self.task.loss(self.network(x), y)
        # The training loss is summed on the device and reported as a mean every `log_every` steps: calling
        # self.log on every step can cost more than the step itself for small networks (benchmarks/imp_speed.py).
        detached = loss.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_count += 1
        step = self.trainer.global_step + 1  # the step this batch's update completes
        if step % self.log_every == 0 or step == self.total_steps:
            mean = float(self._loss_sum) / self._loss_count
            self._loss_sum, self._loss_count = None, 0
            self.log("train/loss", mean, on_step=True, on_epoch=False, prog_bar=True, logger=False)
            for logger in self.loggers:
                logger.log_metrics({"train/loss": mean}, step=step)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.enforce_mask()
        # Lightning counts this step once the hook returns. Evaluating here, rather than in on_train_batch_end, puts
        # the evaluation before every callback's on_train_batch_end, so a checkpoint saved at this step already
        # holds its result and a resumed level sees exactly the evaluations of an uninterrupted one.
        self.maybe_evaluate(self.trainer.global_step + 1)

    def enforce_mask(self) -> None:
        if self._pruned is None or any(p.device != dead.device for p, dead in self._pruned):
            # Found once per device: (parameter, its pruned entries) for the layers with any.
            self._pruned = M.pruned_entries(M.prunable_weights(self.network), self.mask)
        M.zero_(self._pruned)

    # ---- evaluation at fixed steps
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current network on a whole split, in eval mode (with a task: its
        accuracy and loss, lottery/data/tasks.py)."""
        return evaluate_network(self.network, x, y, self.num_classes, self.device, task=self.task)

    def on_train_start(self) -> None:
        self._clock = time.perf_counter()

    def maybe_evaluate(self, step: int) -> None:
        if step % self.eval_every and step != self.total_steps:
            return
        acc, loss = self.evaluate(*self.val_data)
        self.last_val_acc = acc
        if acc > self.best_val_acc:  # strict: the earliest step reaching the best accuracy is the one recorded
            self.best_val_acc, self.best_val_step = acc, step
        if loss < self.best_val_loss:  # strict, likewise: the earliest step of the minimum validation loss
            self.best_val_loss, self.early_stop_step = loss, step
            if self.test_data is not None:
                self.early_stop_test_acc = self.evaluate(*self.test_data)[0]
        # Straight to the loggers: self.log would only flush on Lightning's log_every_n_steps grid and could drop
        # an evaluation that falls between two of its points.
        for logger in self.loggers:
            logger.log_metrics({"val/acc": acc, "val/loss": loss}, step=step)
        if self.on_evaluate is not None and self.trainer.is_global_zero:
            self.on_evaluate(step, acc, loss)

    def on_train_end(self) -> None:
        self.train_seconds += time.perf_counter() - self._clock
        self._clock = time.perf_counter()
        # Spawned DDP workers send rank 0's weights and callback_metrics back to the driver, not module attributes:
        # the level's progress travels there (float64, so the values arrive exactly) and restore_progress reads it.
        if self.trainer.world_size > 1:
            self.check_ranks_identical()
        for key in PROGRESS:
            self.trainer.callback_metrics[f"lottery/{key}"] = torch.tensor(getattr(self, key), dtype=torch.float64)

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
        """Take the level's progress from a finished fit's callback_metrics (a no-op for a fit in this process)."""
        for key in PROGRESS:
            if f"lottery/{key}" in metrics:
                value = float(metrics[f"lottery/{key}"])
                setattr(self, key, int(value) if key in STEPS else value)

    # ---- checkpoints: progress and RNG in, masked (or swapped) weights out
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lottery"] = {
            "best_val_acc": self.best_val_acc,
            "best_val_step": self.best_val_step,
            "best_val_loss": self.best_val_loss,
            "early_stop_step": self.early_stop_step,
            "early_stop_test_acc": self.early_stop_test_acc,
            "train_seconds": self.train_seconds + time.perf_counter() - self._clock,
            "torch_rng": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Called before Lightning loads the state dict, so this is where a level's starting weights are made:
        # rewind weights (or, for LR rewinding, the previous level's trained weights) times the mask.
        state = checkpoint["state_dict"]
        if self.start_weights is not None:
            state = {**state, **{PREFIX + k: v for k, v in self.start_weights.items()}}
        checkpoint["state_dict"] = M.masked_state_dict(state, self.mask, prefix=PREFIX)
        extra = checkpoint.get("lottery", {})
        if self.resume_progress and extra:
            self.best_val_acc = extra["best_val_acc"]
            self.best_val_step = extra["best_val_step"]
            self.best_val_loss = extra.get("best_val_loss", self.best_val_loss)
            self.early_stop_step = extra.get("early_stop_step", self.early_stop_step)
            self.early_stop_test_acc = extra.get("early_stop_test_acc", self.early_stop_test_acc)
        if self.fresh_optimizer and not self.resume_progress:
            # Keep the param groups (the LR at the rewind step, as the schedule left it) and drop the per-parameter
            # state (momentum, Adam moments): an optimizer that has taken no step, at the schedule's position k.
            for optimizer_state in checkpoint["optimizer_states"]:
                optimizer_state["state"] = {}
            self.train_seconds = extra["train_seconds"]
        if "torch_rng" in extra:
            torch.set_rng_state(extra["torch_rng"])


@torch.no_grad()
def evaluate_network(
    network: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    device: torch.device | str = "cpu",
    chunk: int = 8192,
    task: Task | None = None,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a network on a whole split in eval mode, in chunks of `chunk` examples.
    Shared by the training loop's evaluations and the analyses that score networks outside a fit (interpolation).
    With a task (lottery/data/tasks.py): the task's accuracy and loss."""
    was_training = network.training
    network.eval()
    logits = torch.cat([network(x[i : i + chunk].to(device)) for i in range(0, len(x), chunk)])
    network.train(was_training)
    y = y.to(logits.device)
    if task is not None:
        return task.metrics(logits, y)
    acc = multiclass_accuracy(logits, y, num_classes=num_classes, average="micro", validate_args=False)
    return float(acc), float(F.cross_entropy(logits.float(), y))


def weights_digest(network: torch.nn.Module) -> int:
    """A 63-bit digest of the exact bytes of every parameter and buffer, to compare networks across processes."""
    h = hashlib.sha256()
    for name, tensor in network.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1
