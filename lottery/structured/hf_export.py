"""The compact form of a pruned Hugging Face LM (model=hf): removed heads and FFN units physically cut out of the
library's own modules, so every layer has its own head count and FFN width.

Per layer: the kept heads' query/key/value output features and their input columns of the output projection stay
(the attention modules of all five families infer the head count from the projection's width, and GPT-2 and OPT keep
it in an attribute, which is set per layer); the kept FFN units' up-projection outputs and down-projection inputs
stay. A layer that lost every head keeps one placeholder head whose output columns the mask has zeroed (GPT-2 and
OPT cannot run an attention of zero heads), so its attention adds only the projection's bias, as the masked one does;
one that lost its FFN block a zero-width FFN (its output is the removed block's bias, which the mask has zeroed). Under
grouped-query attention (a k/v head shared by several query heads) heads are not cut out, only masked; the FFN is
compacted as usual. A masked unit contributes exactly zero, so the compact model computes the masked one's outputs
(to float rounding: sums run over fewer terms).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lottery.models.hf import HFCausalLM


def cut_features(module: nn.Module, keep: torch.Tensor, outputs: bool, conv1d: bool) -> None:
    """Keep the features `keep` of `module`'s outputs (outputs=True) or inputs, in place."""
    w = module.weight
    dim = (1 if conv1d else 0) if outputs else (0 if conv1d else 1)
    module.weight = nn.Parameter(w.index_select(dim, keep.to(w.device)).clone(), requires_grad=w.requires_grad)
    if outputs and getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(module.bias[keep.to(w.device)].clone(), requires_grad=module.bias.requires_grad)
    attr = ("nf" if outputs else "nx") if conv1d else ("out_features" if outputs else "in_features")
    setattr(module, attr, len(keep))


def head_features(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    kept = torch.nonzero(heads).flatten().tolist()
    return torch.tensor([h * head_dim + i for h in kept for i in range(head_dim)], dtype=torch.long)


def can_cut_heads(network: HFCausalLM) -> bool:
    return network.shape.n_kv_heads == network.shape.n_heads


@torch.no_grad()
def compact_hf(network: HFCausalLM, units: Mapping[str, torch.Tensor]) -> tuple[HFCausalLM, dict[str, Any]]:
    """A compact copy of `network` (the full model, its pruned weights already zero) keeping the units of `units`."""
    small = copy.deepcopy(network)
    f, s = small.family, small.shape
    cut_heads = can_cut_heads(small)
    mlp_alive = units["mlp_units"] & units["mlp_blocks"][:, None]
    for layer, block in enumerate(small.decoder_layers()):
        if cut_heads:
            kept = units["heads"][layer]
            if not kept.any():  # GPT-2 and OPT cannot run zero heads: keep one, its output columns zero (masked)
                kept = torch.arange(len(kept)) == 0
            feats = head_features(kept, s.head_dim)
            inner = s.n_heads * s.head_dim
            if f.fused == "gpt2":
                cut_features(
                    block.get_submodule(f.qkv[0]), torch.cat([feats, feats + inner, feats + 2 * inner]), True, True
                )
                attn = block.get_submodule(f.o.rsplit(".", 1)[0])
                attn.split_size, attn.num_heads = len(feats), len(feats) // s.head_dim
            elif f.fused == "neox":
                rows = head_features(kept, 3 * s.head_dim)
                cut_features(block.get_submodule(f.qkv[0]), rows, True, False)
            else:
                for name in f.qkv:
                    cut_features(block.get_submodule(name), feats, True, False)
                attn = block.get_submodule(f.o.rsplit(".", 1)[0])
                if hasattr(attn, "num_heads"):  # OPT reshapes by it
                    attn.num_heads = len(feats) // s.head_dim
            cut_features(block.get_submodule(f.o), feats, False, f.conv1d)
        keep = torch.nonzero(mlp_alive[layer]).flatten()
        if not len(keep) and f.conv1d:  # GPT-2's Conv1D takes no zero-width input: one placeholder unit, zeroed
            keep = torch.zeros(1, dtype=torch.long)
        for name in f.up:
            cut_features(block.get_submodule(name), keep, True, f.conv1d)
        cut_features(block.get_submodule(f.down), keep, False, f.conv1d)
    small.compacted = True
    heads = units["heads"] if cut_heads else torch.ones_like(units["heads"])
    config = {
        "model": "hf",
        "family": small.family_name,
        "heads_per_layer": [int(h) for h in heads.sum(1).tolist()],
        "mlp_per_layer": [int(m) for m in mlp_alive.sum(1).tolist()],
        "heads_kept": heads.int().tolist(),
        "mlp_kept": mlp_alive.int().tolist(),
        "heads_cut": cut_heads,
    }
    return small, config
