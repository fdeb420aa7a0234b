"""The LightningModule of a cohort: N replicas of one network trained as one vectorized computation.

Replicas share the architecture, data, step count and schedule and differ in seed (initialisation, data order), mask
and starting weights. Their parameters are stacked on a leading dimension (torch.func.stack_module_state) and the
network runs once per step under vmap(functional_call): PyTorch's model-ensembling recipe, which turns N small,
loop-bound fits into one. The loss is the sum of the replicas' own mean losses, so replica i's gradient is the
gradient of its own loss alone; Adam and SGD (momentum, weight decay) act element-wise, so one optimizer over the
stacked parameters is N independent optimizers (torch's unfused implementations: the fused Adam and SGD kernels,
about 2x faster on 8 LeNet-300-100 replicas, split their work by the tensor's length, so a replica would differ in
rounding between a cohort of 8 and a cohort of one, which tests/test_cohort.py showed). Each replica keeps its own
mask (enforced after every step, as in LevelModule), its own evaluations, best-so-far metrics and early-stopping
point.

A replica's result does not depend on the cohort it ran in: replica i of a cohort of 8 equals the same seed trained
as a cohort of one, bit for bit on the CPU (tests/test_cohort.py). It differs from the solo LevelModule by float
rounding only (batched matrix products sum in another order than single ones); the README gives the measured size.

Models with BatchNorm (running statistics updated in place), dropout (per-replica random draws) or other buffers are
refused: vmap cannot keep them per replica the way a solo fit does.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics.functional.classification import multiclass_accuracy

from lottery.core import masks as M
from lottery.core.artifacts import PREFIX
from lottery.data.tasks import Task
from lottery.training.module import evaluate_network

# Per-replica progress saved in a cohort checkpoint (and in each replica's own solo-format checkpoint).
PROGRESS = ("best_val_acc", "best_val_step", "best_val_loss", "early_stop_step", "early_stop_test_acc", "train_seconds")


class CohortError(ValueError):
    """A run that cannot train as a cohort (a model vmap cannot vectorize, a distributed trainer)."""


def check_vectorizable(network: nn.Module, model: str) -> None:
    """Refuse what vmap cannot keep per replica, naming the model and the fix."""
    batchnorm = [n for n, m in network.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    dropout = [n for n, m in network.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]
    buffers = [n for n, _ in network.named_buffers()]
    if batchnorm or dropout or buffers:
        what = f"BatchNorm ({batchnorm[0]})" if batchnorm else f"dropout ({dropout[0]})" if dropout else "buffers"
        raise CohortError(
            f"model={model} has {what}, which a cohort cannot keep per replica under vmap. Cohorts train networks "
            "without BatchNorm, dropout or buffers (mlp, lenet_300_100, conv2/conv4/conv6, transformer); "
            "run this model without launcher=cohort (solo fits)"
        )


class CohortModule(L.LightningModule):
    def __init__(
        self,
        networks: Sequence[nn.Module],
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
    ) -> None:
        super().__init__()
        self.size = len(networks)
        for mask, network in zip(masks, networks, strict=True):
            M.check_compatible(mask, M.prunable_weights(network))
        # The template runs every replica's slice of the stacked parameters (functional_call); kept out of the
        # module's children so it adds nothing to the state dict or the optimizer.
        self._template = (copy.deepcopy(networks[0]).to("meta"),)
        stacked, _ = stack_module_state(list(networks))
        # `network` has the solo network's structure and parameter names, each with a leading replica dimension:
        # a cohort checkpoint's key `network.fc1.weight` is the solo key, so splitting one is slicing.
        self.network = copy.deepcopy(networks[0])
        for name, tensor in stacked.items():
            owner, _, leaf = name.rpartition(".")
            setattr(self.network.get_submodule(owner), leaf, nn.Parameter(tensor.detach().clone()))
        self.make_optimizer = optimizer
        self.lr_lambda = lr_lambda
        self.mask = {k: torch.stack([m[k] for m in masks]) for k in masks[0]}
        # (parameter, float mask) of the layers with pruned entries, found on first use (see enforce_mask).
        self._keep: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.val_data, self.test_data = val_data, test_data
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.eval_every = max(1, eval_every)
        self.log_every = max(1, log_every)
        self.start_weights = None
        if start_weights is not None:
            self.start_weights = {k: torch.stack([w[k] for w in start_weights]) for k in start_weights[0]}
        self.resume_progress = resume_progress
        self.fresh_optimizer = fresh_optimizer
        self.task = task
        self.replica_loggers = [list(group) for group in loggers] or [[] for _ in networks]
        n = self.size
        self.best_val_acc, self.best_val_step = [float("-inf")] * n, [-1] * n
        self.best_val_loss, self.early_stop_step = [float("inf")] * n, [-1] * n
        self.early_stop_test_acc, self.last_val_acc = [float("nan")] * n, [float("nan")] * n
        self.train_seconds = [0.0] * n
        # Set again when training starts; from construction until then so that a checkpoint saved before the
        # module's own on_train_start (the step-0 rewind point, saved by a callback first) records ~0 s, not uptime.
        self._clock = time.perf_counter()
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self.fit_device = torch.device("cpu")

    # ---- the replicas
    def stacked_params(self) -> dict[str, torch.Tensor]:
        return dict(self.network.named_parameters())

    def _outputs(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._template[0], dict(params), (x,))

    def _loss(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self._outputs(params, x)
        return F.cross_entropy(logits, y) if self.task is None else self.task.loss(logits, y)

    def replica_losses(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Each replica's mean loss on its own batch: xs is (replicas, batch, ...)."""
        return vmap(self._loss)(self.stacked_params(), xs, ys)

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.network.parameters())
        scheduler = LambdaLR(optimizer, self.lr_lambda)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch, batch_idx):
        xs, ys = batch
        losses = self.replica_losses(xs, ys)
        detached = losses.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._loss_count += 1
        step = self.trainer.global_step + 1
        if step % self.log_every == 0 or step == self.total_steps:
            means = (self._loss_sum / self._loss_count).tolist()
            self._loss_sum, self._loss_count = None, 0
            self.log("train/loss", sum(means) / len(means), on_step=True, on_epoch=False, prog_bar=True, logger=False)
            for group, mean in zip(self.replica_loggers, means, strict=True):
                for logger in group:
                    logger.log_metrics({"train/loss": mean}, step=step)
        # A sum, not a mean: replica i's gradient is exactly its own loss's gradient, whatever the cohort size.
        return losses.sum()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.enforce_mask()
        self.maybe_evaluate(self.trainer.global_step + 1)

    @torch.no_grad()
    def enforce_mask(self) -> None:
        """After every step: multiply by the float mask, exact zeros wherever the weights are finite. A multiply
        rather than LevelModule's masked fill because on stacked tensors the fill costs several times more (about 1
        ms per step for 8 LeNet-300-100 replicas); the fill, which also clears an inf or nan, runs once at the end
        of the fit (`on_train_end`) and whenever a checkpoint is loaded (`on_load_checkpoint`)."""
        if self._keep is None or any(p.device != keep.device for p, keep in self._keep):
            params = self.stacked_params()
            self._keep = [
                (params[n], m.to(params[n].device, params[n].dtype)) for n, m in self.mask.items() if not bool(m.all())
            ]
        for p, keep in self._keep:
            p.mul_(keep)

    # ---- evaluation at fixed steps, per replica
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> list[tuple[float, float]]:
        """(accuracy, mean cross-entropy) of every replica on one whole split. One replica at a time rather than
        under vmap: the split is shared, and vmap's batched products over it ran 2.5x slower than the replicas'
        own (8 LeNet-300-100 replicas on 5,000 examples); an evaluation is every `eval_every` steps, so the loop's
        dispatch cost does not matter."""
        params = {k: v.detach() for k, v in self.stacked_params().items()}
        y = y.to(self.device)
        out = []
        for i in range(self.size):
            replica = {k: v[i] for k, v in params.items()}
            parts = [self._outputs(replica, x[j : j + chunk].to(self.device)) for j in range(0, len(x), chunk)]
            logits = torch.cat(parts)
            if self.task is not None:
                out.append(self.task.metrics(logits, y))
                continue
            acc = multiclass_accuracy(logits, y, num_classes=self.num_classes, average="micro", validate_args=False)
            out.append((float(acc), float(F.cross_entropy(logits.float(), y))))
        return out

    def on_train_start(self) -> None:
        self._clock = time.perf_counter()

    def maybe_evaluate(self, step: int) -> None:
        if step % self.eval_every and step != self.total_steps:
            return
        scores = self.evaluate(*self.val_data)
        improved = []
        for i, (acc, loss) in enumerate(scores):
            self.last_val_acc[i] = acc
            if acc > self.best_val_acc[i]:
                self.best_val_acc[i], self.best_val_step[i] = acc, step
            if loss < self.best_val_loss[i]:
                self.best_val_loss[i], self.early_stop_step[i] = loss, step
                improved.append(i)
            for logger in self.replica_loggers[i]:
                logger.log_metrics({"val/acc": acc, "val/loss": loss}, step=step)
        if improved and self.test_data is not None:  # scored only where a replica's validation loss improved
            tests = self.evaluate(*self.test_data)
            for i in improved:
                self.early_stop_test_acc[i] = tests[i][0]

    def on_train_end(self) -> None:
        M.zero_(M.pruned_entries(self.stacked_params(), self.mask))
        elapsed = time.perf_counter() - self._clock
        self.train_seconds = [s + elapsed for s in self.train_seconds]
        self._clock = time.perf_counter()

    # ---- checkpoints: per-replica progress in, masked (or swapped) weights out
    def progress_of(self, i: int) -> dict:
        record = {key: getattr(self, key)[i] for key in PROGRESS}
        record["train_seconds"] += time.perf_counter() - self._clock
        return record

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lottery_cohort"] = [self.progress_of(i) for i in range(self.size)]
        checkpoint["lottery"] = {"torch_rng": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        if self.start_weights is not None:
            state = {**state, **{PREFIX + k: v for k, v in self.start_weights.items()}}
        checkpoint["state_dict"] = M.masked_state_dict(state, self.mask, prefix=PREFIX)
        replicas = checkpoint.get("lottery_cohort", [])
        if self.resume_progress and replicas:
            for key in PROGRESS:
                setattr(self, key, [r[key] for r in replicas])
        if self.fresh_optimizer and not self.resume_progress:
            for optimizer_state in checkpoint["optimizer_states"]:
                optimizer_state["state"] = {}
            if replicas:
                self.train_seconds = [r["train_seconds"] for r in replicas]
        if "torch_rng" in checkpoint.get("lottery", {}):
            torch.set_rng_state(checkpoint["lottery"]["torch_rng"])

    def replica_weights(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v.detach()[i].clone() for k, v in self.network.state_dict().items()}


class ReplicaResult(nn.Module):
    """One replica of a finished cohort fit, in the shape results.finish_level reads from a LevelModule."""

    def __init__(self, network: nn.Module, cohort: CohortModule, i: int, task: Task | None, num_classes: int):
        super().__init__()
        self.network = network
        self.network.load_state_dict(cohort.replica_weights(i))
        for key in (*PROGRESS, "last_val_acc"):
            setattr(self, key, getattr(cohort, key)[i])
        self.processes = 1
        self.cohort_size = cohort.size
        self.fit_device = cohort.fit_device
        self.task, self.num_classes = task, num_classes

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        device = next(self.network.parameters()).device
        return evaluate_network(self.network, x, y, self.num_classes, device, task=self.task)
