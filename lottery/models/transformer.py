"""A small decoder-only transformer for in-context learning: embedding, pre-norm blocks of multi-head causal
self-attention and an MLP, a final norm and an output head (tied to the token embedding, or a separate Linear).

Built for structured pruning (lottery/core/units.py): every head owns its rows of `q`, `k`, `v` and its columns of `o`;
every MLP hidden unit its row of `fc_in` and column of `fc_out`. The attention and MLP layers have no biases, so a
head or unit whose weights are masked contributes exactly zero (a bias on `o` or `fc_out` would survive a masked head
or block). `forward(x, gates=...)` multiplies each head's output, each MLP hidden unit and each MLP block's output by a
gate; at gates of one the output is unchanged, and d loss / d gate is the gradient importance of Michel et al. 2019.

`heads_per_layer` / `mlp_per_layer` build the compact model (lottery/structured/export.py): fewer heads or MLP units
per layer, 0 to drop a layer's attention or MLP entirely, with the same head size, so a compacted network computes
what the masked one does. Inputs of shape (T,) are token ids (vocabulary = `num_classes`), inputs of shape (T, D) are
vectors read in by a Linear (regression prompts); outputs are (batch, T, num_classes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lottery.core.units import Slice, UnitLayout
from lottery.models.mlp import scaled


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021) of (batch, heads, T, head_dim) queries or keys: pairs of features
    rotated by position-dependent angles, so q.k depends on the offset between positions."""
    t, d = x.shape[-2], x.shape[-1]
    freq = 10000.0 ** (-torch.arange(0, d - d % 2, 2, device=x.device, dtype=torch.float32) / d)
    angle = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * freq
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    even, odd = x[..., 0 : d - d % 2 : 2], x[..., 1 : d - d % 2 : 2]
    turned = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
    return torch.cat([turned, x[..., d - d % 2 :]], dim=-1)


def transformer_layout(n_layers: int, n_heads: int, head_dim: int, d_mlp: int, prefix: str = "blocks") -> UnitLayout:
    """The unit layout of this Transformer: `{prefix}.{l}.attn.{q,k,v,o}` and `{prefix}.{l}.mlp.{fc_in,fc_out}`."""
    heads, units, blocks = [], [], []
    for layer in range(n_layers):
        attn, mlp = f"{prefix}.{layer}.attn", f"{prefix}.{layer}.mlp"
        for h in range(n_heads):
            a, b = h * head_dim, (h + 1) * head_dim
            heads.append(
                tuple(Slice(f"{attn}.{p}.weight", 0, a, b) for p in "qkv") + (Slice(f"{attn}.o.weight", 1, a, b),)
            )
        for j in range(d_mlp):
            units.append((Slice(f"{mlp}.fc_in.weight", 0, j, j + 1), Slice(f"{mlp}.fc_out.weight", 1, j, j + 1)))
        blocks.append((Slice(f"{mlp}.fc_in.weight", 0, 0, d_mlp), Slice(f"{mlp}.fc_out.weight", 1, 0, d_mlp)))
    return UnitLayout(
        grids={"heads": (n_layers, n_heads), "mlp_units": (n_layers, d_mlp), "mlp_blocks": (n_layers,)},
        slices={"heads": tuple(heads), "mlp_units": tuple(units), "mlp_blocks": tuple(blocks)},
    )


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, head_dim: int, rope: bool = False) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.rope = n_heads, head_dim, rope
        inner = n_heads * head_dim
        self.q = nn.Linear(d_model, inner, bias=False)
        self.k = nn.Linear(d_model, inner, bias=False)
        self.v = nn.Linear(d_model, inner, bias=False)
        self.o = nn.Linear(inner, d_model, bias=False)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if self.rope:
            q, k = rotary(q), rotary(k)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, heads, t, head_dim): A_h
        if gate is not None:  # (b or 1, heads)
            heads = heads * gate[:, :, None, None].to(heads.dtype)
        return self.o(heads.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_mlp, bias=False)
        self.fc_out = nn.Linear(d_mlp, d_model, bias=False)

    def forward(self, x: torch.Tensor, unit_gate: torch.Tensor | None = None) -> torch.Tensor:
        hidden = F.gelu(self.fc_in(x))
        if unit_gate is not None:  # (b or 1, d_mlp)
            hidden = hidden * unit_gate[:, None, :].to(hidden.dtype)
        return self.fc_out(hidden)


class Block(nn.Module):
    """Pre-norm residual block; `attn` / `mlp` is None when the compact model dropped every head / unit of it."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int, d_mlp: int, rope: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model) if n_heads else None
        self.attn = Attention(d_model, n_heads, head_dim, rope) if n_heads else None
        self.ln2 = nn.LayerNorm(d_model) if d_mlp else None
        self.mlp = MLP(d_model, d_mlp) if d_mlp else None

    def forward(self, x: torch.Tensor, layer: int, gates: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.ln1(x), _at(gates, "heads", layer))
        if self.mlp is not None:
            out = self.mlp(self.ln2(x), _at(gates, "mlp_units", layer))
            block_gate = _at(gates, "mlp_blocks", layer)
            x = x + (out if block_gate is None else out * block_gate[:, None, None].to(out.dtype))
        return x


def _at(gates: Mapping[str, torch.Tensor], kind: str, layer: int) -> torch.Tensor | None:
    gate = gates.get(kind)
    return None if gate is None else gate[:, layer]


class Transformer(nn.Module):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        d_mlp: int = 256,
        width: float = 1.0,
        tied: bool = False,
        positions: str = "learned",
        heads_per_layer: Sequence[int] | None = None,
        mlp_per_layer: Sequence[int] | None = None,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) not in (1, 2):
            raise ValueError(f"Transformer takes prompts shaped (T,) tokens or (T, D) vectors; got {shape}")
        if n_layers < 1 or n_heads < 1:
            raise ValueError(f"model.n_layers={n_layers} and model.n_heads={n_heads} must be at least 1")
        self.d_model, self.d_mlp = scaled(d_model, width), scaled(d_mlp, width)
        if head_dim is None:
            if self.d_model % n_heads:
                raise ValueError(
                    f"model.d_model={d_model} times model.width={width} is {self.d_model}, not divisible by "
                    f"model.n_heads={n_heads}; choose a width or head count that divides it"
                )
            head_dim = self.d_model // n_heads
        self.n_layers, self.n_heads, self.head_dim = n_layers, n_heads, head_dim
        self.heads_per_layer = list(heads_per_layer) if heads_per_layer is not None else [n_heads] * n_layers
        self.mlp_per_layer = list(mlp_per_layer) if mlp_per_layer is not None else [self.d_mlp] * n_layers
        if len(self.heads_per_layer) != n_layers or len(self.mlp_per_layer) != n_layers:
            raise ValueError(f"heads_per_layer and mlp_per_layer need one entry per layer ({n_layers})")
        self.input_shape, self.num_classes = shape, num_classes
        self.tokens = len(shape) == 1
        self.seq_len = shape[0]
        if tied and not self.tokens:
            raise ValueError("model.tied=true shares the token embedding with the output head; vector inputs have none")
        self.tied = tied
        if positions not in ("learned", "rotary"):
            raise ValueError(f"model.positions={positions!r} is not one of learned, rotary")
        self.positions = positions
        if self.tokens:
            self.embed = nn.Embedding(num_classes, self.d_model)
        else:
            self.read_in = nn.Linear(shape[1], self.d_model)
        # learned: a position embedding added to the input (GPT-2, OPT); rotary: positions rotate queries and keys
        self.pos = nn.Parameter(torch.zeros(self.seq_len, self.d_model)) if positions == "learned" else None
        rope = positions == "rotary"
        self.blocks = nn.ModuleList(
            Block(self.d_model, h, head_dim, m, rope)
            for h, m in zip(self.heads_per_layer, self.mlp_per_layer, strict=True)
        )
        self.ln_f = nn.LayerNorm(self.d_model)
        self.unembed = None if tied else nn.Linear(self.d_model, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's initialisation: normal(0, 0.02), the projections back into the residual stream scaled by
        1/sqrt(2 * layers) so the residual's variance does not grow with depth."""
        for name, p in self.named_parameters():
            if ".ln" in name or name.startswith("ln_f"):
                continue  # LayerNorms keep their ones and zeros
            if name.endswith("bias"):
                nn.init.zeros_(p)
                continue
            residual = name.endswith((".o.weight", ".fc_out.weight"))
            nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.n_layers) if residual else 0.02)

    def layout(self) -> UnitLayout:
        """Which weight slices each head, MLP hidden unit and MLP block owns (the full, uncompacted model only)."""
        if self.heads_per_layer != [self.n_heads] * self.n_layers or self.mlp_per_layer != [self.d_mlp] * self.n_layers:
            raise ValueError("a compacted transformer has no unit layout; prune the full model and compact again")
        return transformer_layout(self.n_layers, self.n_heads, self.head_dim, self.d_mlp)

    def forward(self, x: torch.Tensor, gates: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """`gates`: optional {"heads": (B|1, layers, heads), "mlp_units": (B|1, layers, d_mlp), "mlp_blocks":
        (B|1, layers)} multipliers (full model only)."""
        h = self.embed(x) if self.tokens else self.read_in(x)
        if self.pos is not None:
            h = h + self.pos[: h.shape[1]]
        gates = gates or {}
        for layer, block in enumerate(self.blocks):
            h = block(h, layer, gates)
        h = self.ln_f(h)
        return F.linear(h, self.embed.weight) if self.tied else self.unembed(h)
