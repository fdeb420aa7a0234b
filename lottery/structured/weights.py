"""Weight-level post-training pruning beside the unit grid (structured.grid_units=[weights]): every linear weight
inside the decoder layers (attention q, k, v, o and the FFN's matrices; not the embeddings or the output head, as Sun
et al. 2023 prune) zeroed by score and pattern (lottery/core/sparsity.py) and the model evaluated with no retraining:
loss and perplexity with intervals, accuracy, and the exact density reached.

    lottery model=hf model.path=<folder> data=lm_text data.path=<text> pruning.strategy=structured \\
        structured.procedure=no_retrain "structured.grid_units=[weights]" "structured.grid_scores=[magnitude,wanda]"

Wanda as the published code runs it (Sun et al. 2023, lib/prune.py, prune_wanda): layer by layer, each layer's input
norms taken on the calibration tokens as they leave the layers below *after* those were pruned; within a layer every
matrix's norms come from one pass of the unpruned layer, then the layer is pruned and run again to feed the next. The
calibration tokens are the scoring prompts of the training split (structured.score_examples; theirs: 128 C4
sequences of 2048 tokens), every real token of them (padding excluded). Magnitude and random need no calibration.

Nothing is written to the model's files: masks are applied to the weights in memory for one evaluation and the
original values are put back (`Pruned`), bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from lottery.core.sparsity import WITHIN, density, mask_for, parse_pattern, wanda_scores
from lottery.data.tasks import IGNORE
from lottery.structured.points import mean_point
from lottery.structured.probe import Probe, Prompts

KIND = "weights"


def decoder_stack(network: nn.Module) -> nn.ModuleList:
    """The decoder layers in order: a pretrained model's (HFCausalLM), or lottery.models.Transformer's blocks."""
    if hasattr(network, "decoder_layers"):
        return network.decoder_layers()
    if hasattr(network, "blocks"):
        return network.blocks
    raise ValueError(f"{type(network).__name__} has no decoder layers to prune weights of; use model=hf or transformer")


def _is_linear(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) is a linear layer with its weight stored (in, out)
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _matrix(module: nn.Module) -> torch.Tensor:
    """The weight as (out, in), a view of the parameter."""
    w = module.weight
    return w.T if type(module).__name__ == "Conv1D" else w


class Pruned:
    """The linear weights of a network's decoder layers, by name ("<layer>.<path>"), pruned in memory and put back
    exactly. Applying a mask keeps aside only the values it zeroes (with a reference to the mask), not a dense copy of
    every matrix: the copy was the linear weights' memory again (about 13 GB beside a 7B model in bfloat16), the
    removed values are the pruned fraction of it. Scores read the weights themselves, which are dense whenever no
    mask is applied."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.layers = decoder_stack(network)
        self.by_layer: list[dict[str, nn.Module]] = [
            {f"{i}.{name}": m for name, m in layer.named_modules() if _is_linear(m)}
            for i, layer in enumerate(self.layers)
        ]
        self.modules = {name: m for layer in self.by_layer for name, m in layer.items()}
        if not self.modules:
            raise ValueError(f"{type(network).__name__} has no linear weights in its decoder layers")
        self._removed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (mask, the values it zeroed)
        # the dense pass's captures of the calibration prompts (the same at every fraction and pattern), by prompts
        self._calls: tuple[Prompts, list[dict[str, Any]]] | None = None

    @property
    def total(self) -> int:
        return sum(_matrix(m).numel() for m in self.modules.values())

    def dense(self) -> dict[str, torch.Tensor]:
        """Every matrix as (out, in), dense: the weights themselves (views), with no mask applied."""
        if self._removed:
            raise RuntimeError(f"{len(self._removed)} matrices are pruned in memory; restore them before scoring")
        return {name: _matrix(m).detach() for name, m in self.modules.items()}

    def check_pattern(self, pattern: str) -> None:
        n, m = parse_pattern(pattern)
        bad = {k: _matrix(mod).shape[1] for k, mod in self.modules.items() if _matrix(mod).shape[1] % m}
        if bad:
            name, width = next(iter(bad.items()))
            raise ValueError(
                f"structured.weight_patterns has {pattern!r}, but {len(bad)} weight(s) have inputs not a multiple of "
                f"{m} (e.g. {name}: {width}); leave {pattern!r} out or use an M that divides every input width"
            )

    def apply(self, masks: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, keep in masks.items():
                if name in self._removed:
                    raise RuntimeError(f"{name} is pruned in memory already; restore it before another mask")
                w = _matrix(self.modules[name])
                keep = keep.to(device=w.device)
                self._removed[name] = (keep, w[~keep])  # boolean indexing copies: the values, not a view
                w.masked_fill_(~keep, 0)  # exact zeros, a non-finite weight's too (a multiply left its nan)

    def restore(self, names: Iterator[str] | None = None) -> None:
        """Put back the values the masks of `names` (default: every applied mask) zeroed, bit for bit."""
        with torch.no_grad():
            for name in list(self._removed) if names is None else names:
                keep, values = self._removed.pop(name)
                w = _matrix(self.modules[name])
                w[~keep] = values  # through the view into the parameter (Conv1D's transpose included)

    @contextmanager
    def applied(self, masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
        self.apply(masks)
        try:
            yield
        finally:
            self.restore(iter(masks))

    # ---- masks
    def masks(
        self,
        score: str,
        pattern: str,
        fraction: float | None,
        probe: Probe | None = None,
        calibration: Prompts | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The kept weights (True) of every matrix: by magnitude or random from the dense weights, by Wanda through
        the layer-by-layer calibration pass (`probe` and `calibration` needed)."""
        if score == "wanda":
            if probe is None or calibration is None:
                raise ValueError("Wanda's scores need the calibration prompts and a probe to run them")
            return self._wanda(probe, calibration, pattern, fraction)
        out = {}
        for name, w in self.dense().items():
            if score == "magnitude":
                scores = w.abs().double()
            elif score == "random":
                if generator is None:
                    raise ValueError("random masks need a seeded generator")
                scores = torch.rand(w.shape, generator=generator, dtype=torch.float64)
            else:
                raise ValueError(f"no weight score {score!r}; use magnitude, wanda or random")
            out[name] = mask_for(scores, score, pattern, fraction)
        return out

    @torch.no_grad()
    def _wanda(self, probe: Probe, calibration: Prompts, pattern: str, fraction: float | None) -> dict:
        if self._calls is None or self._calls[0] is not calibration:
            self._calls = (calibration, list(_calibration_calls(probe, calibration, self.layers)))
        batches = self._calls[1]
        hidden = [b["input"] for b in batches]
        masks: dict[str, torch.Tensor] = {}
        try:
            for i, layer in enumerate(self.layers):
                sums = {
                    name: torch.zeros(_matrix(m).shape[1], dtype=torch.float64) for name, m in self.by_layer[i].items()
                }
                state: dict[str, torch.Tensor] = {}
                hooks = [
                    m.register_forward_pre_hook(_accumulate(sums, name, state)) for name, m in self.by_layer[i].items()
                ]
                try:
                    for b, h in zip(batches, hidden, strict=True):
                        state["real"] = b["real"]
                        layer(h, *b["args"][i], **b["kwargs"][i])
                finally:
                    for hook in hooks:
                        hook.remove()
                layer_masks = {
                    name: mask_for(wanda_scores(_matrix(m).detach().cpu(), sums[name]), "wanda", pattern, fraction)
                    for name, m in self.by_layer[i].items()
                }
                self.apply(layer_masks)  # the layers above see this layer pruned, as in the published procedure
                masks |= layer_masks
                hidden = [
                    _first(layer(h, *b["args"][i], **b["kwargs"][i])) for b, h in zip(batches, hidden, strict=True)
                ]
        finally:
            self.restore(iter(masks))
        return masks


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _calibration_calls(probe: Probe, prompts: Prompts, layers: nn.ModuleList) -> Iterator[dict[str, Any]]:
    """Per batch of calibration prompts, from one dense pass: the first decoder layer's input, every layer's other
    arguments (attention masks, position embeddings, layer index: none depends on the layers' weights, so they are
    replayed as they were), and the real tokens (B, T) whose inputs count."""
    if probe.whole:
        runs = ((x, _every(x)) for x, _ in probe.whole_batches(prompts))  # no padding: every position
    else:
        runs = ((x, _real(at)) for x, at, _, _ in probe.batches(prompts, "Wanda calibration"))
    for x, real in runs:
        calls: dict[int, tuple] = {}
        hooks = [
            layer.register_forward_pre_hook(_capture(i, calls), with_kwargs=True) for i, layer in enumerate(layers)
        ]
        try:
            if getattr(probe.network, "scores_positions", False):  # no output head: only the layers' inputs count
                probe.network(x, at=torch.zeros_like(x, dtype=torch.bool))
            else:
                probe.network(x)
        finally:
            for hook in hooks:
                hook.remove()
        n = len(layers)
        yield {
            "input": calls[0][0],
            "args": [calls[i][1] for i in range(n)],
            "kwargs": [calls[i][2] for i in range(n)],
            "real": real,
        }


def _every(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def _real(at: torch.Tensor) -> torch.Tensor:
    """Every position up to each prompt's last scored one (the rest is right padding)."""
    last = torch.where(at, torch.arange(at.shape[1], device=at.device), -1).max(1).values
    return torch.arange(at.shape[1], device=at.device)[None, :] <= last[:, None]


def _capture(index: int, calls: dict[int, tuple]) -> Callable:
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        rest = dict(kwargs) if args else {k: v for k, v in kwargs.items() if k != "hidden_states"}
        calls[index] = (hidden, tuple(args[1:]), rest)

    return hook


def _accumulate(sums: dict[str, torch.Tensor], name: str, state: dict[str, torch.Tensor]) -> Callable:
    def hook(module, args):
        x = args[0]
        real = state["real"]
        if x.shape[:2] == real.shape:
            rows = x[real]
        elif x.dim() == 2 and x.shape[0] == real.numel():  # tokens flattened first (OPT's FFN): the same order
            rows = x[real.reshape(-1).to(x.device)]
        else:
            raise ValueError(f"{name}: an input of shape {tuple(x.shape)} does not line up with {tuple(real.shape)}")
        sums[name] += rows.double().pow(2).sum(0).cpu()

    return hook


# ---- the curves


def weight_curves(
    pruned: Pruned,
    probe: Probe,
    test: Prompts,
    scoring: Prompts,
    s: Any,
    patterns: tuple[str, ...],
    seed: int,
    iv: Any,
    clock: Any,
    journal: Any,
    draw_seed: Callable[[int, str, int], int],
) -> dict[str, Any]:
    """Every score's curve over the grid (unstructured) and its N:M points, each with accuracy, loss, perplexity and
    their intervals on the study's resamples, and the exact density reached."""
    scores = [sc for sc in s.scores if s.applies(KIND, sc)]
    for pattern in patterns:  # before any measurement: a width N:M cannot cut is refused first
        pruned.check_pattern(pattern)
    dense = clock.kept(journal, "weights/dense", lambda: probe.evaluate(test, nll=True))

    def point(score: str, pattern: str, fraction: float | None) -> dict[str, Any]:
        tag = f"{score}/{pattern}" + ("" if fraction is None else f"/{fraction!r}")
        draws, reached = [], None
        for draw in range(s.random_draws if score == "random" else 1):

            def measure(draw: int = draw) -> dict[str, Any]:
                gen = torch.Generator().manual_seed(draw_seed(seed, KIND, draw)) if score == "random" else None
                masks = pruned.masks(score, pattern, fraction, probe, scoring, gen)
                with pruned.applied(masks):
                    out = probe.evaluate(test, nll=True)
                return out | {"density": density(masks)}

            key = f"weights/{tag}" + (f"/{draw}" if score == "random" else "")
            measured = clock.kept(journal, key, measure)
            draws.append(measured)
            reached = measured["density"]
        p = mean_point(draws)
        p["nll"] = [math.fsum(v) / len(v) for v in zip(*(d["nll"] for d in draws), strict=True)]
        return _marked(p | {"density": reached, "pattern": pattern}, dense, iv) | (
            {} if fraction is None else {"fraction": fraction}
        )

    curves = {sc: [point(sc, "unstructured", f) for f in s.grid] for sc in scores}
    by_pattern = {pattern: {sc: point(sc, pattern, None) for sc in scores} for pattern in patterns}
    dense_out = _marked(dict(dense), dense, iv, reference=False)
    return {
        "curves": curves,
        "patterns": by_pattern,
        "dense": {k: v for k, v in dense_out.items() if k not in ("hits", "tokens")},
        "about": {
            "matrices": len(pruned.modules),
            "weights": pruned.total,
            "compared_within": {sc: WITHIN[sc] for sc in scores},
            "calibration_prompts": len(scoring) if "wanda" in scores else 0,
            "calibration_tokens": _count_real(scoring) if "wanda" in scores else 0,
        },
    }


def _count_real(prompts: Prompts) -> int:
    if prompts.targets.dim() < 2:
        return int(prompts.x.shape[0] * prompts.x.shape[1])
    at = prompts.targets != IGNORE
    return int(_real(at).sum()) if at.dim() == 2 else int(prompts.x.shape[0] * prompts.x.shape[1])


def _marked(p: dict[str, Any], dense: dict[str, Any], iv: Any, reference: bool = True) -> dict[str, Any]:
    """Accuracy interval and drop bound (the study's Intervals), loss interval and rise bound on the same resamples,
    perplexity with its interval; the per-prompt losses are left out of the file."""
    r, c, tokens = iv.resamples, iv.confidence, dense["tokens"]
    out = dict(p)
    nll = out.pop("nll")
    if reference:
        iv.mark(out)
    else:
        out["acc_ci"] = iv.ci(out["hits"])
    out["loss_ci"] = r.interval(nll, tokens, c)
    if reference:
        out["loss_rise_bound"] = r.drop_bound(nll, dense["nll"], tokens, c)
    out["perplexity"] = math.exp(out["loss"])
    out["perplexity_ci"] = [math.exp(x) for x in out["loss_ci"]]
    return out
