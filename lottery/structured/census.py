"""Dead FFN units of a pretrained causal LM (model=hf): how many hidden units of each layer's feed-forward block never
fire on the prompts given, measured before any pruning, so a pruning curve can be read against the units that were
free to remove anyway.

A unit's activation is its input to the down-projection (what HFCausalLM's `mlp_units` gate scales), seen by a
forward pre-hook on that module. Over the counted tokens the census keeps, per unit, the running max |act| and the
number of tokens where act == 0 exactly; the activations themselves are never stored, so memory is O(layers x d_ff)
whatever the number of batches. The rule depends on the activation function:

- ReLU FFNs (OPT): ReLU gives exact zeros, so a unit is dead when act == 0 on at least `zero_fraction` of the
  tokens (default 99.9%).
- Smooth FFNs (GELU in GPT-2 and GPT-NeoX; SwiGLU in Llama and Mistral, whose down input silu(gate) * up is almost
  never exactly 0; GeGLU in Gemma 3, gelu_tanh(gate) * up, whose GELU only comes near 0 for a negative gate, where a
  ReLU is 0: float32's is exactly 0 only below about -5): a unit is dead when its max |act| over every token is
  below `relative` x the layer's mean |act| (mean over units and tokens; default 1%), i.e. it never reaches a
  hundredth of a typical activation.

Under either rule a unit that is exactly 0 on every counted token is dead (a layer whose units are all silent has
a mean of 0, which no max is below). Pure torch: no transformers, Lightning or Hydra import.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lottery.models.hf import HFCausalLM

ZERO_ACTIVATIONS = ("relu", "relu2", "relu6")  # names in transformers' ACT2FN whose outputs are exactly 0 below 0


def activation_name(config: Any) -> str:
    """The FFN activation of a library config: GPT-2 and OPT call it `activation_function`, Gemma
    `hidden_activation` (which its FFN uses where a Gemma config has `hidden_act` too), NeoX and Llama `hidden_act`."""
    for key in ("activation_function", "hidden_activation", "hidden_act"):
        name = getattr(config, key, None)
        if isinstance(name, str):
            return name
    return "unknown"


class _Counter:
    """Running per-unit statistics of one layer's FFN activation, fed one batch at a time by a pre-hook."""

    def __init__(self) -> None:
        self.max_abs: torch.Tensor | None = None  # (d_ff,)
        self.zeros: torch.Tensor | None = None  # (d_ff,) tokens with act == 0 exactly
        self.abs_sum = 0.0  # sum of |act| over units and tokens, for the layer's mean
        self.tokens = 0

    def add(self, act: torch.Tensor, keep: torch.Tensor | None) -> None:
        # (B, T, d_ff) or (B*T, d_ff) (OPT flattens tokens first): rows are tokens in the same order either way
        rows = act.detach().reshape(-1, act.shape[-1])
        if keep is not None:
            rows = rows[keep.reshape(-1).to(rows.device)]
        if rows.shape[0] == 0:
            return
        magnitude = rows.abs().float()  # float32 sums and maxima, also for bf16/fp16 models
        batch_max, batch_zeros = magnitude.amax(0), (rows == 0).sum(0)
        if self.max_abs is None:
            self.max_abs, self.zeros = batch_max, batch_zeros
        else:
            self.max_abs, self.zeros = torch.maximum(self.max_abs, batch_max), self.zeros + batch_zeros
        self.abs_sum += float(magnitude.sum(dtype=torch.float64))
        self.tokens += rows.shape[0]


@torch.no_grad()
def ffn_census(
    network: HFCausalLM,
    batches: Iterable[torch.Tensor],
    relative: float = 0.01,
    mask: torch.Tensor | Iterable[torch.Tensor] | None = None,
    zero_fraction: float = 0.999,
) -> dict[str, Any]:
    """Dead FFN units per layer of `network` (a pretrained HFCausalLM, or lottery.models.Transformer) over `batches`
    of input ids (B, T), as the network's forward takes them.

    `mask`: which tokens to count (bool, True for real tokens, False for padding): one (B, T) tensor when every
    batch has that shape, or an iterable of one per batch; None counts every token. Activations of every token are
    still computed (the model is causal, so right padding does not change the real tokens'); the mask only chooses
    which ones enter the statistics. The network runs in eval mode and is put back in its previous mode.

    Returns (JSON-friendly) {"rule", "activation", "relative", "zero_fraction", "tokens", "per_layer": [{"layer",
    "dead", "units", "fraction", "dead_units"}], "dead_total", "units_total", "fraction"}; `relative` is null under
    the ReLU rule and `zero_fraction` null under the relative one, since each rule uses only its own threshold.
    """
    if hasattr(network, "lm"):
        name = activation_name(network.lm.config)
        gated = len(network.family.up) > 1  # SwiGLU, GeGLU: the down input is act(gate) * up, not act(up)
        downs = [block.get_submodule(network.family.down) for block in network.decoder_layers()]
    else:  # lottery.models.Transformer from scratch: a GELU MLP whose fc_out reads the hidden units
        name, gated = "gelu", False
        downs = [block.mlp.fc_out for block in network.blocks]
    zero_rule = name in ZERO_ACTIVATIONS
    activation = f"{name}(gate) * up" if gated else name
    counters = [_Counter() for _ in downs]
    current: dict[str, torch.Tensor | None] = {"keep": None}

    def hook_for(counter: _Counter):
        def hook(module, args):
            counter.add(args[0], current["keep"])

        return hook

    handles = [down.register_forward_pre_hook(hook_for(c)) for down, c in zip(downs, counters, strict=True)]
    masks = _per_batch(mask)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    try:
        for x in batches:
            keep = next(masks)
            if keep is not None and tuple(keep.shape) != tuple(x.shape):
                raise ValueError(f"mask shape {tuple(keep.shape)} differs from the batch's {tuple(x.shape)}")
            current["keep"] = None if keep is None else keep.to(torch.bool)
            x = x.to(device)
            if getattr(network, "scores_positions", False):  # no output head at all: its logits are not needed
                network(x, at=torch.zeros_like(x, dtype=torch.bool))
            else:
                network(x)
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    tokens = counters[0].tokens if counters else 0
    if tokens == 0:
        raise ValueError("ffn_census counted no tokens: give at least one batch with a True in its mask")

    per_layer = []
    for index, c in enumerate(counters):
        units = int(c.max_abs.numel())
        if zero_rule:
            dead = c.zeros >= zero_fraction * c.tokens
        else:
            mean = c.abs_sum / (c.tokens * units)
            dead = c.max_abs < relative * mean
        dead |= c.max_abs == 0  # silent on every token: dead under either rule
        count = int(dead.sum())
        per_layer.append(
            {
                "layer": index,
                "dead": count,
                "units": units,
                "fraction": count / units,
                "dead_units": dead.nonzero().flatten().tolist(),
            }
        )
    dead_total, units_total = sum(r["dead"] for r in per_layer), sum(r["units"] for r in per_layer)
    if zero_rule:
        rule = f"dead: activation exactly 0 on >= {zero_fraction:.4g} of the tokens ({activation} FFN)"
    else:
        rule = f"dead: max |activation| over all tokens < {relative:.4g} x the layer's mean |activation| ({activation})"
    return {
        "rule": rule,
        "activation": activation,
        "relative": None if zero_rule else relative,
        "zero_fraction": zero_fraction if zero_rule else None,
        "tokens": tokens,
        "per_layer": per_layer,
        "dead_total": dead_total,
        "units_total": units_total,
        "fraction": dead_total / units_total if units_total else 0.0,
    }


def _per_batch(mask: torch.Tensor | Iterable[torch.Tensor] | None):
    """One mask (or None) per batch, forever: the same tensor for every batch, or the next of an iterable."""
    if mask is None or isinstance(mask, torch.Tensor):
        while True:
            yield mask
    yield from mask
    raise ValueError("fewer masks than batches")
