"""The compact model: a smaller dense transformer with the pruned heads, MLP units and MLP blocks physically removed.

A masked model still multiplies by every zero; the compact one has fewer heads per layer (q, k, v rows and o columns
dropped), fewer MLP hidden units (fc_in rows, fc_out columns), and no attention or MLP at all in a layer that lost
all of them, with the same head size. Since a masked unit contributes exactly zero, the compact model computes the
same outputs (to float rounding: sums run over fewer terms) with fewer parameters and less time per forward pass.

    python -m lottery.structured.export outputs/<name>/<hash>/seed_0/level_3     # writes level_3/compact.pt

compact.pt holds {"config": constructor arguments of lottery.models.Transformer, "state_dict": ...}; rebuild it with
`Transformer(**config)` and `load_state_dict` (`torch.load(..., weights_only=True)` reads it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lottery.core.units import UnitMask
from lottery.models.transformer import Transformer


def compact_config(network: Transformer, units: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    heads = units["heads"].sum(1).tolist()
    mlp_alive = units["mlp_units"] & units["mlp_blocks"][:, None]
    return {
        "input_shape": list(network.input_shape),
        "num_classes": network.num_classes,
        "d_model": network.d_model,
        "n_layers": network.n_layers,
        "n_heads": network.n_heads,
        "d_mlp": network.d_mlp,
        "tied": network.tied,
        "head_dim": network.head_dim,
        "heads_per_layer": [int(h) for h in heads],
        "mlp_per_layer": [int(m) for m in mlp_alive.sum(1).tolist()],
    }


@torch.no_grad()
def compact(network: Transformer, units: Mapping[str, torch.Tensor]) -> tuple[Transformer, dict[str, Any]]:
    """The compact copy of `network` (the full model, its pruned weights already zero) keeping the units of `units`
    (all three kinds, as lottery.core.units.contract gives them). A pretrained LM (model=hf) is cut in place of the
    library's own modules (lottery/structured/hf_export.py)."""
    from lottery.models.hf import HFCausalLM

    if isinstance(network, HFCausalLM):
        from lottery.structured.hf_export import compact_hf

        return compact_hf(network, units)
    config = compact_config(network, units)
    small = Transformer(**config)
    source, target = network.state_dict(), small.state_dict()
    dh = network.head_dim
    mlp_alive = units["mlp_units"] & units["mlp_blocks"][:, None]
    for name, value in source.items():
        if not name.startswith("blocks."):
            target[name].copy_(value)
            continue
        layer = int(name.split(".")[1])
        if name not in target:  # attention or MLP of a layer that lost all its units
            continue
        if ".attn." in name:
            rows = torch.cat(
                [torch.arange(h * dh, (h + 1) * dh) for h in torch.nonzero(units["heads"][layer]).flatten()]
            )
            target[name].copy_(value[:, rows] if name.endswith("o.weight") else value[rows])
        elif ".mlp." in name:
            keep = torch.nonzero(mlp_alive[layer]).flatten()
            target[name].copy_(value[:, keep] if name.endswith("fc_out.weight") else value[keep])
        else:  # the layer norms
            target[name].copy_(value)
    return small, config


def parameters(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


@torch.no_grad()
def forward_ms(network: torch.nn.Module, x: torch.Tensor, repeats: int = 15) -> float:
    """Median wall time of one forward pass over `x`, in milliseconds (after one warm-up pass)."""
    network.eval()
    network(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        network(x)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def compare(network: Transformer, units: UnitMask, x: torch.Tensor) -> dict[str, Any]:
    """Compact `network`, check its outputs against the masked model's on `x`, and time both."""
    small, config = compact(network, units)
    network.eval()
    with torch.no_grad():
        diff = float((network(x) - small(x)).abs().max())
    return {
        "heads_per_layer": config["heads_per_layer"],
        "mlp_per_layer": config["mlp_per_layer"],
        "parameters_masked": parameters(network),
        "parameters_compact": parameters(small),
        "forward_ms_masked": forward_ms(network, x),
        "forward_ms_compact": forward_ms(small, x),
        "max_abs_output_difference": diff,
        "batch": len(x),
    }


def main(argv: list[str] | None = None) -> int:
    from lottery.structured.rebuild import rebuild

    parser = argparse.ArgumentParser(prog="python -m lottery.structured.export", description=__doc__.splitlines()[0])
    parser.add_argument("level_dir", help="a finished level folder (holding weights.pt and mask.pt)")
    parser.add_argument("--out", help="where to write the compact model (default: <level_dir>/compact.pt)")
    args = parser.parse_args(argv)
    level_dir = Path(args.level_dir)
    network, units, x_test = rebuild(level_dir)
    result = compare(network, units, x_test[:512])
    small, config = compact(network, units)
    out = Path(args.out) if args.out else level_dir / "compact.pt"
    from lottery.core import artifacts

    artifacts.save_torch({"config": config, "state_dict": small.state_dict()}, out)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"compact model: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
