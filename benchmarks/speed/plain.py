"""(a) the baseline: the loop a user would write by hand, over in-memory tensors, the mask re-applied with
masked_fill_ after every optimizer step, the same evaluations as (b), one forward pass each.

It copies the framework's initialisation, mask, data order and validation split, so it trains exactly what (b) does.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from .framework import batches, random_mask
from .nets import evaluate, linear_weights, mlp
from .runner import InMemoryRunner


class PlainRunner(InMemoryRunner):
    """(a): the loop a user would write by hand."""

    def run(self, steps: int) -> dict[str, Any]:
        import torch
        from torch.nn import functional as F

        hp = self.hp
        self.evals.reset()
        evaluate_timed = self.evals.wrap(evaluate)
        shapes = {
            n: tuple(w.shape) for n, w in linear_weights(mlp(self.x[0].numel(), hp["hidden"], self.num_classes)).items()
        }
        mask = random_mask(shapes, hp["seed"])  # made outside the timing, as for (b)
        start = time.perf_counter()
        torch.manual_seed(hp["seed"])
        net = mlp(self.x[0].numel(), hp["hidden"], self.num_classes)
        weights = linear_weights(net)
        dead = [(weights[n], ~m) for n, m in mask.items()]
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"])
        val_loss = float("nan")
        for step, (x, y) in enumerate(batches(self.x, self.y, hp["batch_size"], hp["seed"], steps), start=1):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p, d in dead:
                    p.masked_fill_(d, 0)
            if step % self.eval_every == 0 or step == steps:
                _, val_loss = evaluate_timed(net, self.x_val, self.y_val)
        seconds = time.perf_counter() - start
        self.net = net
        return self.result(steps, seconds, val_loss, {n: w.detach() for n, w in weights.items()})

    def extra(self) -> dict[str, Any]:
        """One bare forward pass over the validation split: the yardstick of an evaluation's cost."""
        import torch

        net = self.net.eval()
        times = []
        with torch.no_grad():
            for i in range(23):
                start = time.perf_counter()
                net(self.x_val)
                if i >= 3:  # the first passes warm caches and allocator
                    times.append(time.perf_counter() - start)
        return {"val_forward_ms": 1e3 * statistics.median(times)}
