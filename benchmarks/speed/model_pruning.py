"""(c) Lightning's own pruning: `ModelPruning("l1_unstructured", amount=0.2, use_lottery_ticket_hypothesis=True)`
on a minimal LightningModule over the same batches as (a) and (b), pruning once when training starts.

The worker reports it as n/a, with the reason, where it does not run (e.g. the callback cannot be imported).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .framework import batches
from .nets import evaluate, mlp
from .runner import InMemoryRunner
from .workloads import DENSITY


class ModelPruningRunner(InMemoryRunner):
    """(c): Lightning's own pruning callback on a minimal LightningModule over the same batches."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.spec = spec

    def run(self, steps: int) -> dict[str, Any]:
        import lightning as L
        import torch
        from lightning.pytorch.callbacks import ModelPruning
        from torch.nn import functional as F

        hp, runner = self.hp, self
        evaluate_timed = self.evals.wrap(evaluate)
        self.evals.reset()

        class PruneOnceAtStart(ModelPruning):
            """Prune (and reset the survivors, LTH-style) once, before the first step, instead of at epoch ends."""

            def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
                self.apply_pruning(self.amount)
                self.apply_lottery_ticket_hypothesis()

            def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
                pass

        class Module(L.LightningModule):
            def __init__(self, net: torch.nn.Module) -> None:
                super().__init__()
                self.net = net
                self.val_loss = float("nan")

            def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
                x, y = batch
                return F.cross_entropy(self.net(x), y)

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.Adam(
                    self.net.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"]
                )

            def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
                step = self.trainer.global_step
                if step % runner.eval_every == 0 or step == steps:
                    _, self.val_loss = evaluate_timed(self.net, runner.x_val, runner.y_val)

        class Batches:
            """An in-memory iterable of the level's batches (Lightning takes any iterable with a length)."""

            def __len__(self) -> int:
                return steps

            def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
                return batches(runner.x, runner.y, hp["batch_size"], hp["seed"], steps)

        start = time.perf_counter()
        torch.manual_seed(hp["seed"])
        net = mlp(self.x[0].numel(), hp["hidden"], self.num_classes)
        module = Module(net)
        layers = [m for m in net if isinstance(m, torch.nn.Linear)]
        pruning = PruneOnceAtStart(
            "l1_unstructured",
            amount=1 - DENSITY,
            use_lottery_ticket_hypothesis=True,
            parameters_to_prune=[(m, "weight") for m in layers],
            verbose=0,
        )
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            accelerator="cpu",
            devices=1,
            logger=False,
            callbacks=[pruning],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            default_root_dir=self.spec["tmp"],
        )
        trainer.fit(module, train_dataloaders=Batches())
        seconds = time.perf_counter() - start
        return self.result(steps, seconds, module.val_loss, {f"fc{i}": m.weight.detach() for i, m in enumerate(layers)})
