"""Where the heads and feed-forward units of each supported Hugging Face causal-LM family live: module names and
weight orientations, and the unit layout (lottery/core/units.py) built from them. Pure torch: no transformers import.

A head owns its query/key/value output features and its input columns of the attention output projection; an FFN
(MLP) hidden unit its output feature of the up-projection(s) and its input column of the down-projection; a whole FFN
block all of those and the down-projection's bias, so a removed block adds nothing at all to the residual stream; a
whole layer (decoder block) all of its heads and its FFN block and the attention output's bias, so a removed layer is
exactly the identity (its input passes through the residual stream unchanged).
Masking the output projection's inputs is what makes a head's contribution exactly zero (Transformers 5 has no
`head_mask`); the q/k/v and up-projection slices make the magnitude score and the compact export see the whole unit.

GPT-2 stores its projections as Conv1D, weight [in, out]; every other family as nn.Linear, weight [out, in].

Gemma 3 (model_type gemma3_text) has Llama's module names and a gated FFN (GeGLU: a gelu-tanh gate), and an RMSNorm
after its attention and after its FFN as well as before them. A removed head's zeros pass through the output
projection and then post_attention_layernorm, so the remaining heads' output is re-normalised: exactly what zeroed
weights give, since the norm sees the same vector either way. A removed FFN block's all-zero output stays exactly zero
through post_feedforward_layernorm (x * rsqrt(mean(x^2) + eps) * (1 + w) of x = 0 is 0), so a removed block or layer
is still exactly nothing or the identity. A continuous gate behaves differently, though: the norm undoes a common
scale, so a gate on a whole block's down-projection output would leave the model unchanged at every value above 0
but for what eps adds, and its gradient would measure eps rather than the block (on Gemma 3 270M, 4 to 10^6 times
smaller than after the norm); Gemma's FFN-block gate therefore sits after post_feedforward_layernorm (`ffn_out`),
where the block enters the residual stream. Heads and FFN units are gated where Llama's are: at 0 they are exactly
removed, but the norm makes the gradients of one layer's heads (or units) sum to ~0, since scaling them all together
changes nothing; each one's |gradient| is still its score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lottery.core.units import Slice, UnitLayout


@dataclass(frozen=True)
class Family:
    layers: str  # the decoder layers' ModuleList, from the model's root
    qkv: tuple[str, ...]  # (q, k, v) projections, or one fused projection
    fused: str  # "" (separate q, k, v) | "gpt2" (columns [q | k | v]) | "neox" (rows [head][q, k, v][head_dim])
    o: str  # attention output projection
    up: tuple[str, ...]  # FFN input projection(s): fc_in, or gate and up for gated (SwiGLU, GeGLU) FFNs
    down: str  # FFN output (down) projection
    conv1d: bool = False  # weights stored [in, out] (GPT-2's Conv1D)
    # the module whose output is the FFN block's whole contribution to the residual stream, where an mlp_blocks gate
    # scales it: "" for the down-projection itself, or a norm after it (Gemma's post_feedforward_layernorm)
    ffn_out: str = ""


FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer.h", ("attn.c_attn",), "gpt2", "attn.c_proj", ("mlp.c_fc",), "mlp.c_proj", True),
    "opt": Family(
        "model.decoder.layers",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "",
        "self_attn.out_proj",
        ("fc1",),
        "fc2",
    ),
    "gpt_neox": Family(
        "gpt_neox.layers",
        ("attention.query_key_value",),
        "neox",
        "attention.dense",
        ("mlp.dense_h_to_4h",),
        "mlp.dense_4h_to_h",
    ),
    "llama": Family(
        "model.layers",
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        "",
        "self_attn.o_proj",
        ("mlp.gate_proj", "mlp.up_proj"),
        "mlp.down_proj",
    ),
}
FAMILIES["mistral"] = FAMILIES["llama"]
# Gemma 3's text models (Gemma3ForCausalLM; a GGUF file's "gemma3"): Llama's names, GeGLU FFN, post-norms (see above)
FAMILIES["gemma3_text"] = dataclasses.replace(FAMILIES["llama"], ffn_out="post_feedforward_layernorm")
SUPPORTED = tuple(FAMILIES)


@dataclass(frozen=True)
class Shape:
    """The sizes a layout needs, read from the loaded model."""

    n_layers: int
    n_heads: int
    n_kv_heads: int  # < n_heads under grouped-query attention (Llama 2 70B, Mistral, Gemma 3): k, v shared by heads
    head_dim: int
    d_ff: int  # FFN hidden units per layer
    down_bias: bool  # the down-projection has a bias (GPT-2, OPT, NeoX)
    d_model: int  # the residual stream's width (the down-projection's outputs)
    o_bias: bool = False  # the attention output projection has a bias (GPT-2, OPT, NeoX)


def _out(conv1d: bool) -> int:
    return 1 if conv1d else 0  # the weight dim indexing output features


def head_slices(f: Family, p: str, h: int, s: Shape) -> tuple[Slice, ...]:
    dh, out, inp = s.head_dim, _out(f.conv1d), 1 - _out(f.conv1d)
    a, b = h * dh, (h + 1) * dh
    if f.fused == "gpt2":
        inner = s.n_heads * dh
        own = tuple(Slice(f"{p}{f.qkv[0]}.weight", out, a + i * inner, b + i * inner) for i in range(3))
    elif f.fused == "neox":
        own = (Slice(f"{p}{f.qkv[0]}.weight", out, 3 * a, 3 * b),)
    else:
        q, k, v = f.qkv
        own = (Slice(f"{p}{q}.weight", out, a, b),)
        if s.n_kv_heads == s.n_heads:  # under grouped-query attention k and v belong to a group, not one head
            own += (Slice(f"{p}{k}.weight", out, a, b), Slice(f"{p}{v}.weight", out, a, b))
    return (*own, Slice(f"{p}{f.o}.weight", inp, a, b))


def layout(f: Family, s: Shape, root: str = "lm.") -> UnitLayout:
    """The unit layout of a model of family `f` held at `root` (HFCausalLM keeps the library's model as `lm`)."""
    out, inp = _out(f.conv1d), 1 - _out(f.conv1d)
    heads, units, blocks, layers = [], [], [], []
    for layer in range(s.n_layers):
        p = f"{root}{f.layers}.{layer}."
        own_heads = [head_slices(f, p, h, s) for h in range(s.n_heads)]
        heads += own_heads
        ups = [f"{p}{u}.weight" for u in f.up]
        down = f"{p}{f.down}.weight"
        units += [(*(Slice(u, out, j, j + 1) for u in ups), Slice(down, inp, j, j + 1)) for j in range(s.d_ff)]
        block = (*(Slice(u, out, 0, s.d_ff) for u in ups), Slice(down, inp, 0, s.d_ff))
        if s.down_bias:
            block += (Slice(f"{p}{f.down}.bias", 0, 0, s.d_model),)
        blocks.append(block)
        # A whole block (layer): every head, the attention output's bias and the FFN block. With all of them zero the
        # attention and the FFN add exactly nothing to the residual stream, so the layer is the identity.
        o_bias = (Slice(f"{p}{f.o}.bias", 0, 0, s.d_model),) if s.o_bias else ()
        layers.append(tuple(x for head in own_heads for x in head) + o_bias + block)
    return UnitLayout(
        grids={
            "heads": (s.n_layers, s.n_heads),
            "mlp_units": (s.n_layers, s.d_ff),
            "mlp_blocks": (s.n_layers,),
            "layers": (s.n_layers,),
        },
        slices={"heads": tuple(heads), "mlp_units": tuple(units), "mlp_blocks": tuple(blocks), "layers": tuple(layers)},
    )


def weight_names(f: Family, n_layers: int, down_bias: bool, root: str = "lm.", o_bias: bool = False) -> list[str]:
    """Every tensor a unit owns: the weights structured masks cover (HFCausalLM.prunable_weights)."""
    names = []
    for layer in range(n_layers):
        p = f"{root}{f.layers}.{layer}."
        names += [f"{p}{m}.weight" for m in (*f.qkv, f.o, *f.up, f.down)]
        if o_bias:
            names.append(f"{p}{f.o}.bias")
        if down_bias:
            names.append(f"{p}{f.down}.bias")
    return names
