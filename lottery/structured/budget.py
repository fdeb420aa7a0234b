"""Prompts per batch from a memory budget: the weights are paid once, and what is left holds the activations of one
batch. The per-token costs are estimates of the tensors a pre-norm decoder layer keeps (q, k, v, attention output,
norms and residuals: about 12 x d_model; the FFN's up, gate and activation: about 4 x d_ff; the attention scores:
about 3 x heads x T) in the weights' dtype. Without gradients only one layer's tensors are alive at a time; with the
gradient score every layer's are kept for the backward pass. benchmarks/hf_memory.py measures the real peak against
the budget."""

from __future__ import annotations

from typing import Any

MAX_BATCH = 256  # beyond this a batch is no faster on a CPU, and the last partial batch wastes more
HEADROOM = 2.0  # autograd and allocator slack on top of the estimate


def activation_bytes_per_prompt(shape: Any, length: int, bytes_per: int, backward: bool) -> float:
    per_token_layer = 12 * shape.d_model + 4 * shape.d_ff + 3 * shape.n_heads * length
    layers = shape.n_layers if backward else 1
    return HEADROOM * bytes_per * per_token_layer * length * layers


def batch_size_for(network: Any, length: int, memory_gb: float, backward: bool) -> int:
    """The largest batch of `length`-token prompts whose activations fit in `memory_gb` beside the weights (at least
    one prompt: a budget below the weights is reported by the measured peak, not refused here)."""
    params = list(network.parameters())
    bytes_per = params[0].element_size() if params else 4
    weights = sum(p.numel() * p.element_size() for p in params)
    per_prompt = activation_bytes_per_prompt(
        network.shape, length, max(bytes_per, 4 if backward else bytes_per), backward
    )
    free = memory_gb * 2**30 - weights
    return int(max(1, min(MAX_BATCH, free // per_prompt)))
