"""A smaller model you keep: the units a pretrained no-retrain study removed, cut out of the model and written as a
folder that `transformers.AutoModelForCausalLM.from_pretrained` loads without this project (config.json, safetensors
weights, the tokenizer beside them, and lottery_export.json saying what was cut and measured).

    lottery-export outputs/smollm2_icl/<hash>/seed_0 --kind layers --score angular --fraction 0.2 --out smollm2-cut
    lottery-export <seed folder> --kind heads --score token_gradient --fraction removable --out <dir>

What shrinks, by family (transformers' configs hold one size per model, not one per layer):
    layers      every family: the removed decoder layers are gone from the stack and config.num_hidden_layers (and
                Gemma 3's per-layer attention types) follow; each kept layer's cache index is renumbered
    heads       Llama, Mistral, Gemma 3 (their configs state head_dim apart from the head count): whole key/value
                groups go. Every layer keeps the same number of groups, the most any layer keeps; a layer keeping
                fewer keeps some removed groups with their weights at zero, and a removed query head inside a kept
                group stays with its weights at zero (its group's keys and values serve the other heads). GPT-2, OPT
                and GPT-NeoX derive the head size from the head count, so a folder with fewer heads would be another
                model: refused.
    mlp_units   every family: the FFN width becomes the most units any layer keeps; the layers keeping fewer keep
    mlp_blocks  some removed units at zero. A removed FFN block shrinks nothing unless every layer's goes (its
                weights are zero); the export says so.
Removed units that cannot shrink are written as zeros, which is what removing them means (tests/test_pretrained.py:
removal by gates equals zeroed weights), so the folder's logits equal the gated model's (a sum over fewer terms
differs by float rounding only; the export measures the largest difference and refuses above 1e-3). It also measures
parameters, file size and forward tokens/s of the dense and the exported model on this machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lottery.core import artifacts
from lottery.core import masks as M
from lottery.core.units import expand, full_units
from lottery.structured.hf_export import cut_features, head_features

HEAD_DIM_IN_CONFIG = ("llama", "mistral", "gemma3_text")  # families whose config states head_dim apart from heads
LOGIT_TOLERANCE = 1e-3  # the largest |logit difference| accepted between the folder and the gated model (float32)
KINDS = ("layers", "heads", "mlp_units", "mlp_blocks")


class ExportError(ValueError):
    pass


def chosen_point(results: dict[str, Any], kind: str, score: str, fraction: str) -> tuple[float, list]:
    """(fraction, kept units) of the study's grid point, or ExportError naming what the study has."""
    curves = results.get("curves", {})
    if kind not in curves:
        raise ExportError(f"--kind {kind}: the study removed {sorted(curves)} (structured.grid_units); pick one")
    if score not in curves[kind]:
        raise ExportError(f"--score {score}: the study ranked {kind} by {sorted(curves[kind])}; pick one")
    points = curves[kind][score]
    grid = [p["fraction"] for p in points]
    if fraction == "removable":
        claimed = results.get("removable", {}).get(kind, {}).get(score)
        if not claimed:
            raise ExportError(
                f"--fraction removable: the study claims no removable fraction of {kind} by {score} ({claimed}); "
                f"give one of the grid's fractions {grid}"
            )
        value = claimed
    else:
        try:
            value = float(fraction)
        except ValueError:
            raise ExportError(f"--fraction {fraction!r} is not a number or 'removable'") from None
    match = [p for p in points if abs(p["fraction"] - value) < 1e-9]
    if not match:
        raise ExportError(f"--fraction {fraction}: the study measured {kind} at the fractions {grid}; pick one")
    return value, match[0]["kept"]


def check_family(family: str, kind: str) -> None:
    if kind == "heads" and family not in HEAD_DIM_IN_CONFIG:
        raise ExportError(
            f"--kind heads: a {family} model derives its head size from its number of heads, so a folder with fewer "
            f"heads would load as another model; heads shrink for {', '.join(HEAD_DIM_IN_CONFIG)}. Export layers, "
            "mlp_units or mlp_blocks instead"
        )


@torch.no_grad()
def cut_layers(lm: Any, family: Any, kept: torch.Tensor) -> None:
    layers = lm.get_submodule(family.layers)
    keep = torch.nonzero(kept).flatten().tolist()
    if not keep:
        raise ExportError("every decoder layer is removed at this fraction: nothing is left to export")
    for i in reversed(range(len(layers))):
        if i not in keep:
            del layers[i]
    for new, layer in enumerate(layers):  # the key/value cache is indexed by each attention module's layer_idx
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new
    config = lm.config
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)


@torch.no_grad()
def cut_heads(lm: Any, family: Any, shape: Any, kept: torch.Tensor) -> int:
    """Whole key/value groups, the same number in every layer; returns it."""
    group = shape.n_heads // shape.n_kv_heads
    alive = kept.view(shape.n_layers, shape.n_kv_heads, group).any(-1)  # a group lives while any of its heads does
    width = max(int(alive.sum(1).max()), 1)
    q, k, v = family.qkv
    for layer, block in enumerate(lm.get_submodule(family.layers)):
        order = torch.cat([torch.nonzero(alive[layer]).flatten(), torch.nonzero(~alive[layer]).flatten()])
        groups = torch.zeros(shape.n_kv_heads, dtype=torch.bool)
        groups[order[:width]] = True
        heads = groups.repeat_interleave(group)
        cut_features(block.get_submodule(q), head_features(heads, shape.head_dim), True, False)
        for name in (k, v):
            cut_features(block.get_submodule(name), head_features(groups, shape.head_dim), True, False)
        cut_features(block.get_submodule(family.o), head_features(heads, shape.head_dim), False, False)
    config = lm.config
    config.head_dim = shape.head_dim  # stated, so the head size does not follow the new head count
    config.num_key_value_heads, config.num_attention_heads = width, width * group
    return width


@torch.no_grad()
def cut_ffn(lm: Any, family: Any, kept: torch.Tensor) -> int:
    """FFN units (layers x d_ff kept), the same width in every layer; returns it."""
    width = max(int(kept.sum(1).max()), 1)
    for layer, block in enumerate(lm.get_submodule(family.layers)):
        order = torch.cat([torch.nonzero(kept[layer]).flatten(), torch.nonzero(~kept[layer]).flatten()])
        units = order[:width].sort().values  # the layer's own order, so nothing but the count changes
        for name in family.up:
            cut_features(block.get_submodule(name), units, True, family.conv1d)
        cut_features(block.get_submodule(family.down), units, False, family.conv1d)
    config = lm.config
    for key in ("intermediate_size", "ffn_dim", "n_inner"):  # Llama/Gemma/NeoX, OPT, GPT-2
        if hasattr(config, key) or key == "n_inner" and config.model_type == "gpt2":
            setattr(config, key, width)
            break
    return width


def _unquantized(lm: Any) -> None:
    """A model dequantized from a GGUF file holds plain tensors, but transformers still marks it quantized and its
    save_pretrained refuses it ("quantized with gguf and is not serializable"): unmark it, so the folder is a plain
    model in model.dtype that loads without the GGUF file or its quantization settings."""
    lm.hf_quantizer = None
    if getattr(lm, "is_quantized", False):
        lm.is_quantized = False
    if getattr(lm.config, "quantization_config", None) is not None:
        del lm.config.quantization_config


def tokens_per_second(models: dict[str, Any], ids: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Forward throughput over `ids` (every position, no cache) of each model: one warm-up pass each, then `repeats`
    rounds that time every model once in turn, so a slow moment of the machine falls on all of them; the median."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for lm in models.values():
            lm.eval()(input_ids=ids, use_cache=False)
        for _ in range(repeats):
            for name, lm in models.items():
                start = time.perf_counter()
                lm(input_ids=ids, use_cache=False)
                times[name].append(time.perf_counter() - start)
    return {name: ids.numel() / statistics.median(t) for name, t in times.items()}


def _timed(dense_dir: Path, loaded: Any, ids: torch.Tensor, dtype: torch.dtype) -> dict[str, float]:
    """Tokens/s of the dense model (loaded back from `dense_dir`, then removed) and the cut one, in turns."""
    from transformers import AutoModelForCausalLM

    try:
        dense = AutoModelForCausalLM.from_pretrained(dense_dir, dtype=dtype)
        return tokens_per_second({"dense": dense, "exported": loaded}, ids)
    finally:
        shutil.rmtree(dense_dir, ignore_errors=True)


def export(seed_dir: Path, kind: str, score: str, fraction: str, out: Path, prompts: int = 32) -> dict[str, Any]:
    """Write the folder `out` (refused if it exists and is not empty) and return what lottery_export.json holds."""
    from transformers import AutoModelForCausalLM

    from lottery.data.text_icl import load_tokenizer
    from lottery.models.hf import check_model, has_tokenizer
    from lottery.structured.probe import gates_of, skipped
    from lottery.structured.rebuild import network_of, run_config, splits_of

    seed_dir, out = Path(seed_dir), Path(out)
    results_path = seed_dir / "no_retrain" / "results.json"
    if not results_path.is_file():
        raise ExportError(
            f"{seed_dir} holds no no_retrain/results.json: give the seed folder of a finished pretrained study "
            "(model=hf, structured.procedure=no_retrain), e.g. outputs/<name>/<hash>/seed_0"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} exists and is not an empty folder; give a new folder (nothing was written)")
    if kind not in KINDS:
        raise ExportError(f"--kind {kind} is not one of {KINDS}")
    config, results = run_config(seed_dir), artifacts.read_json(results_path, "no-retrain results")
    m = config["model"]
    if m.get("name") != "hf":
        raise ExportError(f"{seed_dir} studied model={m.get('name')}; lottery-export writes pretrained (model=hf) ones")
    family = check_model(m["path"], m.get("local_files_only"), m.get("gguf_file"))
    check_family(family, kind)
    value, kept_list = chosen_point(results, kind, score, fraction)
    kept = torch.tensor(kept_list, dtype=torch.bool)

    splits = splits_of(config)
    network = network_of(config, splits).eval()
    layout = network.layout()
    x = splits.x_test[:prompts]
    ids = x if network.identity else network.token_ids[x]  # the model's own token ids
    classes = None if network.identity else network.token_ids.clone()  # the task's tokens among the logits
    removed = {kind: ~kept}
    with torch.no_grad():  # the gated model: what the study measured
        reference = network(x, gates=gates_of(removed, torch.device("cpu")) or None, skip=skipped(removed))
    # The dense model is timed as the cut one will be: written and loaded back by transformers (a model dequantized
    # from GGUF in memory can run slower than the same weights loaded from safetensors), beside it, in turns.
    dense_dir = out.with_name(out.name + ".dense.tmp")
    shutil.rmtree(dense_dir, ignore_errors=True)
    _unquantized(network.lm)
    network.lm.save_pretrained(dense_dir)
    dense_bytes = sum(f.stat().st_size for f in dense_dir.glob("*.safetensors"))
    dense_params = sum(p.numel() for p in network.lm.parameters())
    dtype = next(network.lm.parameters()).dtype

    if kind != "layers":  # zero the removed units first: what cannot shrink stays, as zeros
        units = full_units(layout)
        units[kind] = kept
        shapes = {n: tuple(w.shape) for n, w in M.prunable_weights(network).items()}
        state = M.masked_state_dict(network.state_dict(), expand(units, layout, shapes))
        network.load_state_dict(state)
    lm, f, s = network.lm, network.family, network.shape
    shrunk: dict[str, Any] = {}
    if kind == "layers":
        cut_layers(lm, f, kept)
        shrunk["layers"] = [s.n_layers, int(kept.sum())]
    elif kind == "heads":
        width = cut_heads(lm, f, s, kept.view(s.n_layers, s.n_heads))
        shrunk["heads_per_layer"] = [s.n_heads, width * (s.n_heads // s.n_kv_heads)]
        shrunk["kv_heads_per_layer"] = [s.n_kv_heads, width]
    else:
        alive = kept[:, None].expand(s.n_layers, s.d_ff) if kind == "mlp_blocks" else kept.view(s.n_layers, s.d_ff)
        shrunk["ffn_width"] = [s.d_ff, cut_ffn(lm, f, alive)]
    removed_count = int((~kept).sum())
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lm.save_pretrained(tmp)
    tokenizer = None
    if has_tokenizer(m["path"], m.get("gguf_file")):
        tokenizer = load_tokenizer(m["path"], m.get("gguf_file"))
        tokenizer.save_pretrained(tmp)
    del network, lm
    loaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).eval()
    with torch.no_grad():
        logits = loaded(input_ids=ids, use_cache=False).logits
    logits = logits if classes is None else logits[..., classes]
    diff = float((logits - reference).abs().max())
    if diff > LOGIT_TOLERANCE:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(dense_dir, ignore_errors=True)
        raise ExportError(f"the cut model's logits differ from the gated model's by {diff:.2e} > {LOGIT_TOLERANCE}")
    params = sum(p.numel() for p in loaded.parameters())
    record = {
        "source": str(seed_dir.resolve()),
        "model": {"path": m["path"], "gguf_file": m.get("gguf_file"), "family": family, "dtype": m["dtype"]},
        "kind": kind,
        "score": score,
        "fraction": value,
        "removed_units": removed_count,
        "total_units": int(kept.numel()),
        "shrunk": shrunk,
        "zeroed_not_cut": _zeroed_note(kind, shrunk, removed_count, s),
        "tokenizer": tokenizer is not None,
        "parameters": {"dense": dense_params, "exported": params, "ratio": params / dense_params},
        "file_bytes": sum(p.stat().st_size for p in tmp.glob("*.safetensors")),
        "dense_file_bytes": dense_bytes,
        "max_abs_logit_difference": diff,
        "logit_tolerance": LOGIT_TOLERANCE,
        "checked_prompts": len(x),
        "tokens_per_second": _timed(dense_dir, loaded, ids, dtype),
        "threads": torch.get_num_threads(),
    }
    tps = record["tokens_per_second"]
    tps["speedup"] = tps["exported"] / tps["dense"]
    artifacts.write_json(record, tmp / "lottery_export.json")
    if out.exists():
        out.rmdir()  # empty (checked above)
    tmp.replace(out)
    return record


def _zeroed_note(kind: str, shrunk: dict[str, Any], removed: int, s: Any) -> str:
    """What was removed but written as zeros, in words."""
    if kind == "layers":
        return "nothing: every removed layer is cut"
    if kind == "heads":
        before, after = shrunk["heads_per_layer"]
        cut = (before - after) * s.n_layers
        return (
            f"{removed - cut} of {removed} removed heads are zeros: one config size for every layer keeps the most "
            "key/value groups any layer keeps, and a removed head in a kept group stays"
        )
    before, after = shrunk["ffn_width"]
    if kind == "mlp_blocks":
        return (
            f"{removed} removed FFN blocks are zeros, and the width shrinks only if every layer loses its block "
            f"({before} -> {after})"
        )
    cut = (before - after) * s.n_layers
    return f"{removed - cut} of {removed} removed FFN units are zeros: one width for every layer, the most any keeps"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lottery-export", description=__doc__.splitlines()[0])
    parser.add_argument("seed_dir", help="the seed folder of a finished pretrained study (holding no_retrain/)")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--score", required=True, help="the score whose removals to cut (random: its first draw)")
    parser.add_argument("--fraction", required=True, help="a fraction of the study's grid, or 'removable'")
    parser.add_argument("--out", required=True, help="a new folder for the model")
    parser.add_argument("--prompts", type=int, default=32, help="test prompts the logits and tokens/s are taken on")
    args = parser.parse_args(argv)
    from lottery.models.hf import HFModelError

    try:
        record = export(Path(args.seed_dir), args.kind, args.score, args.fraction, Path(args.out), args.prompts)
    except (ExportError, HFModelError) as err:  # a study whose model folder or GGUF file has gone: named, no traceback
        raise SystemExit(f"lottery-export: {err}") from None
    tps, params = record["tokens_per_second"], record["parameters"]
    print(
        f"wrote {args.out}: {record['kind']} by {record['score']}, {record['removed_units']} of "
        f"{record['total_units']} removed ({record['shrunk']}); zeros: {record['zeroed_not_cut']}"
    )
    print(
        f"parameters {params['dense']:,} -> {params['exported']:,} ({params['ratio']:.1%}); tokens/s "
        f"{tps['dense']:.0f} -> {tps['exported']:.0f} ({tps['speedup']:.2f}x, {record['threads']} threads); largest "
        f"logit difference from the gated model {record['max_abs_logit_difference']:.1e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
