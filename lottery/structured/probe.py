"""A network and its prompts on one device, measured in batches without training: accuracy and loss with units
removed, the gradient importance of units, and the angular distance across each layer.

Why not LevelModule.evaluate: that path keeps every position's logits of every prompt (for a 49,152-token vocabulary
and 200 prompts of 60 tokens, 2.4 GB in float32) and moves weights in and out of the network through state dicts.
Here removal is a gate (a multiplier of 0 on the unit's output, exactly what the zeroed weights give) or, for a whole
layer, skipping it; the output head runs only at the positions that are scored (the answer's tokens, or every token of
a language-modelling window); and batches bound the activations. Nothing here writes to the network's weights.

Metrics follow the task's own definitions (lottery/data/text_task.py, lm_task.py): loss is the mean next-token
negative log-likelihood over every scored token; accuracy is exact match of all of a prompt's scored tokens (a few-shot
answer), or, for tasks with `token_accuracy = True` (language modelling), the share of scored tokens predicted right.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from lottery.data.tasks import IGNORE

UnitMask = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Prompts:
    """Token inputs (n, T), the scored targets (n, T; IGNORE where nothing is scored), for few-shot tasks each
    prompt's number of demonstrations (n,), and the query each prompt asks (n,): intervals resample queries
    (lottery/core/intervals.py); None when every prompt is its own."""

    x: torch.Tensor
    targets: torch.Tensor
    shots: torch.Tensor | None
    queries: torch.Tensor | None = None

    @classmethod
    def of(cls, task: Any, x: torch.Tensor, y: torch.Tensor, queries: Sequence[int] | None = None) -> Prompts:
        # token tasks without a split (associative recall) hold their targets alone, no numbers of demonstrations
        targets, shots = task.split(y) if hasattr(task, "split") else (y, None)
        if targets.shape != x.shape[: targets.dim()]:  # vector inputs (regression) carry one more dimension
            raise ValueError(f"targets of shape {tuple(targets.shape)} do not line up with inputs {tuple(x.shape)}")
        if queries is not None and len(queries) != len(x):
            raise ValueError(f"{len(queries)} query indices for {len(x)} prompts")
        return cls(x, targets, shots, None if queries is None else torch.as_tensor(queries, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> Prompts:
        return Prompts(
            self.x[:n],
            self.targets[:n],
            None if self.shots is None else self.shots[:n],
            None if self.queries is None else self.queries[:n],
        )

    def groups(self) -> torch.Tensor:
        """The cluster of each prompt for the bootstrap: its query, or itself."""
        return self.queries if self.queries is not None else torch.arange(len(self.x))


def gates_of(removed: UnitMask, device: torch.device) -> dict[str, torch.Tensor]:
    """Gates of 0 for removed units and 1 elsewhere, shaped (1, *grid) to broadcast over a batch (layers excluded:
    removed layers are skipped, not gated)."""
    return {k: (~r).float().unsqueeze(0).to(device) for k, r in removed.items() if k != "layers" and bool(r.any())}


def skipped(removed: UnitMask) -> list[int]:
    return torch.nonzero(removed["layers"]).flatten().tolist() if "layers" in removed else []


class Probe:
    """Measures `network` (an HFCausalLM, or any model whose forward takes `gates`) on prompts, `batch_size` at a
    time, on `device`. The network is put in eval mode and its parameters stop requiring gradients: importance
    gradients are taken with respect to the gates only."""

    def __init__(
        self,
        network: torch.nn.Module,
        task: Any,
        device: torch.device,
        batch_size: int,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.network, self.task, self.device, self.batch_size = network, task, torch.device(device), batch_size
        self.say = say  # progress lines of the long passes (scores, knock-outs, the layer scan); None: quiet
        self.progress_every = 20.0  # seconds between two progress lines
        self.token_accuracy = bool(getattr(task, "token_accuracy", False))
        self.scored_logits = getattr(network, "scores_positions", False)  # HFCausalLM: head on scored positions
        # A network trained from scratch on an in-context task of its own (lottery.models.Transformer on recall or
        # regression prompts) is measured by the task's own definitions on its whole outputs: its loss, accuracy,
        # accuracy per number of examples and right queries per prompt (accuracy over queries, as token accuracy).
        self.whole = not self.scored_logits and hasattr(task, "hits")
        if self.whole:
            self.token_accuracy = True
        network.eval().requires_grad_(False)

    # ---- batches
    def batches(
        self, prompts: Prompts, label: str | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, slice]]:
        """(inputs, scored positions, their targets, rows) per batch, cut after the batch's last scored position:
        right padding beyond it changes nothing before it (causal attention), so it is never computed. With a
        `label`, a progress line now and then (Progress)."""
        progress = Progress(label, -(-len(prompts) // self.batch_size), "batches", self.say, self.progress_every)
        for start in range(0, len(prompts), self.batch_size):
            progress.step()
            rows = slice(start, min(start + self.batch_size, len(prompts)))
            targets = prompts.targets[rows]
            at = targets != IGNORE
            used = int(at.any(0).nonzero().max()) + 1 if bool(at.any()) else 1
            x = prompts.x[rows, :used].to(self.device, non_blocking=True)
            at = at[:, :used].to(self.device)
            yield x, at, targets[:, :used].to(self.device)[at], rows

    def whole_batches(self, prompts: Prompts, label: str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, targets) per batch, whole (the task's own functions read every position)."""
        progress = Progress(label, -(-len(prompts) // self.batch_size), "batches", self.say, self.progress_every)
        for start in range(0, len(prompts), self.batch_size):
            progress.step()
            rows = slice(start, min(start + self.batch_size, len(prompts)))
            yield prompts.x[rows].to(self.device), prompts.targets[rows].to(self.device)

    def _evaluate_whole(self, prompts: Prompts, gates: dict[str, torch.Tensor], nll: bool) -> dict[str, Any]:
        outputs = torch.cat([self.network(x, gates=gates or None).cpu() for x, _ in self.whole_batches(prompts)])
        y = prompts.targets
        acc, loss = self.task.metrics(outputs, y)
        hits, units = self.task.hits(outputs, y)
        out = {
            "acc": acc,
            "loss": loss,
            "by_context": self.task.by_context(outputs, y),
            "hits": hits.tolist(),
            "tokens": units.tolist(),
        }
        if nll:
            out["nll"] = (self.task.per_example_loss(outputs, y).double() * units).tolist()
        return out

    def _needs_tokens(self, what: str) -> None:
        if self.whole:
            raise ValueError(f"{what} needs a pretrained language model (model=hf), not {type(self.network).__name__}")

    def logits(self, x: torch.Tensor, at: torch.Tensor, gates=None, skip: Sequence[int] = ()) -> torch.Tensor:
        """Logits of the scored positions, (at.sum(), vocabulary)."""
        if self.scored_logits:
            return self.network(x, gates=gates, at=at, skip=skip)
        if skip:
            raise ValueError(f"{type(self.network).__name__} cannot skip whole layers")
        return self.network(x, gates=gates)[at]

    # ---- evaluation
    @torch.no_grad()
    def evaluate(self, prompts: Prompts, removed: UnitMask | None = None, nll: bool = False) -> dict[str, Any]:
        """{acc, loss, by_context, hits, tokens} with the `removed` units (True = removed) taken out; with `nll`,
        also each prompt's summed loss over its scored tokens (for an interval of the loss)."""
        removed = removed or {}
        gates, skip = gates_of(removed, self.device), skipped(removed)
        if self.whole:
            return self._evaluate_whole(prompts, gates, nll)
        tally = _Tally(len(prompts))
        for x, at, target, rows in self.batches(prompts):
            tally.add(self.logits(x, at, gates or None, skip), at, target, rows)
        out = tally.result(prompts, self.token_accuracy)
        if nll:
            out["nll"] = tally.nll.tolist()
        return out

    @torch.no_grad()
    def layer_scan(self, prompts: Prompts, layers: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
        """evaluate(prompts, {"layers": only layer i}) for each layer i of `layers` (default: all), equal to those
        evaluations bit for bit, at about half their cost: removing layer i leaves layers 0..i-1 unchanged, so one
        dense pass per batch keeps every layer's input, and the pass without layer i starts from layer i's kept
        input (layers 0..i-1 replaced by the identity, layer i by the kept state) instead of computing them again.
        For n layers: n + n(n-1)/2 layer evaluations per batch against n(n-1) for n separate passes."""
        self._needs_tokens("the layer scan")
        stack = self.network.decoder_layers()
        order = list(range(len(stack))) if layers is None else sorted(set(layers))
        tallies = {i: _Tally(len(prompts)) for i in order}
        for x, at, target, rows in self.batches(prompts, f"layer scan ({len(order)} layers removed one at a time)"):
            inputs: dict[int, torch.Tensor] = {}
            hooks = [
                layer.register_forward_pre_hook(_keep_input(i, inputs), with_kwargs=True)
                for i, layer in enumerate(stack)
            ]
            try:
                self.logits(x, at)
            finally:
                for hook in hooks:
                    hook.remove()
            for i in order:
                originals = {j: stack[j] for j in range(i + 1)}
                try:
                    for j in range(i):
                        stack[j] = _Pass()
                    stack[i] = _Kept(inputs[i])  # layer i removed: what leaves it is what entered it
                    logits = self.logits(x, at)
                finally:
                    for j, layer in originals.items():
                        stack[j] = layer
                tallies[i].add(logits, at, target, rows)
        return {i: t.result(prompts, self.token_accuracy) for i, t in tallies.items()}

    @staticmethod
    def _by_context(prompts: Prompts, wrong, nll_rows, tokens_rows) -> dict[str, list] | None:
        """Accuracy, loss and count per number of demonstrations (few-shot tasks; None otherwise)."""
        if prompts.shots is None:
            return None
        hit, per_prompt = (wrong == 0).double(), nll_rows / tokens_rows.clamp(min=1)
        ks = sorted(set(prompts.shots.tolist()))
        return {
            "examples": ks,
            "acc": [float(hit[prompts.shots == k].mean()) for k in ks],
            "loss": [float(per_prompt[prompts.shots == k].mean()) for k in ks],
            "count": [int((prompts.shots == k).sum()) for k in ks],
        }

    # ---- importance
    def gradient_scores(
        self, prompts: Prompts, grids: Mapping[str, tuple[int, ...]], removed: UnitMask | None = None
    ) -> dict[str, torch.Tensor]:
        """I_u = mean over prompts of |dL(x)/dg_u| at the gates (Michel et al. 2019), L(x) the prompt's mean
        next-token loss over its scored tokens; units in `removed` stay removed (their gates at 0) while scoring."""
        removed = removed or {}
        base, skip = gates_of(removed, self.device), skipped(removed)
        sums = {k: torch.zeros(grid, dtype=torch.float64) for k, grid in grids.items()}
        for b, per_prompt_loss in self._losses(prompts, skip, f"gradient scores of {', '.join(grids)}"):
            gates = {
                k: torch.ones((b, *grid), device=self.device, dtype=_dtype(self.network))
                .mul_(base[k] if k in base else 1.0)
                .requires_grad_()
                for k, grid in grids.items()
            }
            fixed = {k: g for k, g in base.items() if k not in gates}
            with torch.enable_grad():
                per_prompt = per_prompt_loss({**fixed, **gates})
                grads = torch.autograd.grad(per_prompt.sum(), list(gates.values()))
            for kind, grad in zip(gates, grads, strict=True):
                sums[kind] += grad.detach().abs().sum(0).double().cpu()
        if len(prompts) == 0:
            raise ValueError("gradient scores need at least one prompt")
        return {k: s / len(prompts) for k, s in sums.items()}

    def _losses(self, prompts: Prompts, skip: Sequence[int], label: str) -> Iterator[tuple[int, Callable]]:
        """Per batch: its size, and the function from gates to each prompt's loss: the mean next-token loss over its
        scored tokens, or for a network measured whole, the task's own per-prompt loss."""
        if self.whole:
            for x, y in self.whole_batches(prompts, label):
                yield len(x), lambda gates, x=x, y=y: self.task.per_example_loss(self.network(x, gates=gates), y)
            return
        for x, at, target, _ in self.batches(prompts, label):

            def loss(gates, x=x, at=at, target=target):
                nll = F.cross_entropy(self.logits(x, at, gates, skip).float(), target, reduction="none")
                per_prompt = torch.zeros(len(x), device=self.device).index_add(0, at.nonzero()[:, 0], nll)
                return per_prompt / at.sum(1).clamp(min=1)

            yield len(x), loss

    def token_head_scores(self, prompts: Prompts, grid: tuple[int, int]) -> torch.Tensor:
        """Bansal et al. 2023's head importance as their released code computes it (amazon-science/llm-interpret,
        lm_eval/base.py, `calculate_importance`): I_h = sum over prompts and positions t of |<dL/dA_h(t), A_h(t)>|,
        A_h(t) head h's attention output at position t (its slice of the output projection's input), divided by
        token counts: every layer but the last by the positions that get a gradient (each prompt's positions up to
        its last scored one; theirs: the sequence length - 1), the last layer by the scored tokens (theirs:
        `importance_score[-1] /= eff_tokens`). L is each prompt's own mean loss over its answer tokens, as in their
        run (the README's command leaves the harness's batch size at 1, so each backward is one prompt's `ll`); a
        prompt's terms do not depend on the other prompts of a batch, so ours equal theirs at any batch size. A gate
        per prompt, position and head gives every term in one backward pass (at gate 1, dL/dg = <dL/dA, A>).
        Where ours differs: our prompts start with the tokenizer's BOS where its convention adds one (theirs are
        tokenized without special tokens), so the position count holds one more position per prompt.
        Michel et al. 2019 (gradient_scores) take |.| of the sum over positions per prompt instead: terms of opposite
        sign at different positions cancel there and add here."""
        self._needs_tokens("token_gradient")
        sums = torch.zeros(grid, dtype=torch.float64)
        positions = scored = 0
        for x, at, target, _ in self.batches(prompts, "token_gradient head scores"):
            b, t = x.shape
            gates = torch.ones((b, grid[0], t, grid[1]), device=self.device, requires_grad=True)
            with torch.enable_grad():
                logits = self.logits(x, at, {"heads": gates}).float()
                nll = F.cross_entropy(logits, target, reduction="none")
                row = at.nonzero()[:, 0]
                per_prompt_mean = (nll / at.sum(1)[row]).sum()  # the sum over prompts of each prompt's mean loss
                (grad,) = torch.autograd.grad(per_prompt_mean, [gates])
            sums += grad.detach().abs().sum((0, 2)).double().cpu()
            last = at.long().cumsum(1).argmax(1)  # each prompt's last scored position
            positions += int((last + 1).sum())
            scored += int(at.sum())
        if scored == 0:
            raise ValueError("head scores need at least one prompt with a scored token")
        sums[:-1] /= positions
        sums[-1] /= scored
        return sums

    @torch.no_grad()
    def knockout_scores(self, prompts: Prompts, grid: tuple[int, ...], kind: str) -> dict[str, torch.Tensor]:
        """Every unit of `kind` removed alone on `prompts`: the accuracy drop and the loss rise against the full model.
        Bansal et al. 2023 rank FFNs by the accuracy drop when each is knocked out alone (their README, "FFN
        Importance Scores"); `score` orders by accuracy drop and breaks its ties (few prompts give few distinct
        accuracies) by loss rise: the rank, 0 the least important."""
        base = self.evaluate(prompts)
        n = math.prod(grid)
        drops, rises = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
        scanned = self.layer_scan(prompts) if kind == "layers" and self.scored_logits else {}
        label = None if scanned else f"knock-outs of {kind}"  # the layer scan gave its own lines
        progress = Progress(label, n, kind, self.say, self.progress_every)
        for i in range(n):
            progress.step()
            alone = torch.zeros(n, dtype=torch.bool)
            alone[i] = True
            out = scanned[i] if i in scanned else self.evaluate(prompts, {kind: alone.view(grid)})
            drops[i], rises[i] = base["acc"] - out["acc"], out["loss"] - base["loss"]
        order = sorted(range(n), key=lambda i: (float(drops[i]), float(rises[i]), i))
        rank = torch.empty(n, dtype=torch.float64)
        rank[order] = torch.arange(n, dtype=torch.float64)
        return {"score": rank.view(grid), "acc_drop": drops.view(grid), "loss_rise": rises.view(grid)}

    @torch.no_grad()
    def angular_distances(self, prompts: Prompts, layers: Sequence[torch.nn.Module]) -> torch.Tensor:
        """Per layer: the mean over scored positions of arccos(cos(h_in, h_out)) / pi, the angular distance between a
        layer's input and output hidden states (Gromov et al. 2024; ShortGPT's Block Influence is 1 - cos). Small means
        the layer barely turns the residual stream: a candidate for removal."""
        sums = torch.zeros(len(layers), dtype=torch.float64)
        count = 0
        state: dict[str, torch.Tensor] = {}
        hooks = [
            layer.register_forward_hook(_record(i, sums, state), with_kwargs=True) for i, layer in enumerate(layers)
        ]
        try:
            for x, at, _, _ in self.batches(prompts, "angular distances"):
                state["at"] = at
                self.logits(x, at)
                count += int(at.sum())
        finally:
            for hook in hooks:
                hook.remove()
        return sums / max(count, 1)


def _record(index: int, sums: torch.Tensor, state: dict[str, torch.Tensor]) -> Callable:
    def hook(module, args, kwargs, out):
        x = args[0] if args else kwargs["hidden_states"]
        y = out[0] if isinstance(out, tuple) else out
        at = state["at"]
        a, b = x.reshape(at.shape + x.shape[-1:])[at].double(), y.reshape(at.shape + y.shape[-1:])[at].double()
        cos = F.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
        sums[index] += float((torch.arccos(cos) / math.pi).sum())

    return hook


def _dtype(network: torch.nn.Module) -> torch.dtype:
    """The gates' dtype: float64 for a float64 model (finite-difference tests), else float32 (a bfloat16 gate would
    round its own gradient)."""
    first = next(network.parameters(), None)
    return torch.float64 if first is not None and first.dtype == torch.float64 else torch.float32


class Progress:
    """A line now and then (at most every `every` seconds, never for the first step) while `total` steps of a long
    pass run: steps done, seconds so far, and the time left at the mean pace so far."""

    def __init__(self, label: str | None, total: int, unit: str, say, every: float = 20.0) -> None:
        self.label, self.total, self.unit, self.say, self.every = label, total, unit, say, every
        self.done, self.start = 0, time.perf_counter()
        self.last = self.start

    def step(self) -> None:
        """Called before each step."""
        now = time.perf_counter()
        if self.say is not None and self.label and self.done and now - self.last >= self.every:
            elapsed = now - self.start
            left = elapsed / self.done * (self.total - self.done)
            self.say(
                f"{self.label}: {self.done}/{self.total} {self.unit}, {elapsed:.0f} s, about "
                f"{int(left // 60)}m{int(left % 60):02d}s left"
            )
            self.last = now
        self.done += 1


class _Tally:
    """Per-prompt misses, summed loss and scored tokens over the batches of one evaluation."""

    def __init__(self, n: int) -> None:
        self.wrong = torch.zeros(n, dtype=torch.int64)
        self.nll = torch.zeros(n, dtype=torch.float64)
        self.tokens = torch.zeros(n, dtype=torch.int64)

    def add(self, logits: torch.Tensor, at: torch.Tensor, target: torch.Tensor, rows: slice) -> None:
        logits = logits.float()
        nll = F.cross_entropy(logits, target, reduction="none").double()
        miss = (logits.argmax(-1) != target).long()
        row = at.nonzero()[:, 0].cpu() + rows.start
        self.wrong.index_add_(0, row, miss.cpu())
        self.nll.index_add_(0, row, nll.cpu())
        self.tokens.index_add_(0, row, torch.ones_like(row))

    def result(self, prompts: Prompts, token_accuracy: bool) -> dict[str, Any]:
        tokens = int(self.tokens.sum())
        loss = float(self.nll.sum() / max(tokens, 1))
        # hits per prompt: 1/0 for an exact match, or its correct tokens (token accuracy, out of tokens)
        hits = self.tokens - self.wrong if token_accuracy else (self.wrong == 0).long()
        acc = float(hits.sum().double() / max(tokens, 1)) if token_accuracy else float(hits.double().mean())
        return {
            "acc": acc,
            "loss": loss,
            "by_context": Probe._by_context(prompts, self.wrong, self.nll, self.tokens),
            "hits": hits.tolist(),
            "tokens": self.tokens.tolist(),
        }


class _Pass(torch.nn.Module):
    """A decoder layer below the first removed one, whose output the next layer does not need (it is kept)."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class _Kept(torch.nn.Module):
    """A removed decoder layer that returns the hidden state that entered it in the dense pass of this batch."""

    def __init__(self, state: torch.Tensor) -> None:
        super().__init__()
        self.state = state

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.state


def _keep_input(index: int, inputs: dict[int, torch.Tensor]) -> Callable:
    def hook(module, args, kwargs):
        inputs[index] = args[0] if args else kwargs["hidden_states"]

    return hook
