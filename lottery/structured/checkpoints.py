"""The over-training study on a pretrained model's own checkpoint series (a Pythia-style list of folders, each the
same architecture at an earlier point of its training): the study as loaded (lottery/structured/pretrained.py) on
every checkpoint, then over_training.json and its figure as for a series trained here (lottery/structured/series.py).

    lottery model=hf model.path=<final folder> data=lm_text data.path=<text> pruning.strategy=structured \\
        structured.procedure=no_retrain "structured.checkpoints=[<folder>@<tokens seen>, ...]" \\
        structured.final_tokens=<tokens the final model saw>

Checked before any weights load (`check`): each entry is a folder of a supported model whose config has the final
model's architecture (model type, widths, depth, heads, vocabulary), tokens are positive and increasing and below
structured.final_tokens. Files: no_retrain/series/<folder name>/results.json per checkpoint (each resumable, as
every study is), seed_<s>/over_training.json with "checkpoint" (the folder) naming each point.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lottery.core import artifacts
from lottery.structured.journal import Journal

if TYPE_CHECKING:
    from lottery.structured.spec import StructuredSpec

# the config fields that make two checkpoints one architecture (absent ones are skipped)
SHAPE = (
    "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "vocab_size", "head_dim", "n_embd", "n_layer", "n_head", "ffn_dim",
)  # fmt: skip


class CheckpointError(ValueError):
    pass


def parse(entries: list[str]) -> list[tuple[str, float]]:
    """[(folder, tokens)] from "folder@tokens" entries."""
    out = []
    for entry in entries:
        folder, at, tokens = str(entry).rpartition("@")
        try:
            value = float(tokens)
        except ValueError:
            value = -1.0
        if not at or not folder or value <= 0:
            raise CheckpointError(
                f"structured.checkpoints entry {entry!r} is not <folder>@<tokens seen>, e.g. ckpts/step1000@2.1e9"
            )
        out.append((folder, value))
    return out


def check(cfg: Any) -> None:
    """Every checkpoint a folder of the final model's architecture, tokens increasing; nothing loads but configs."""
    entries = list(cfg.structured.checkpoints)
    if not entries:
        return
    if cfg.model.name != "hf" or cfg.structured.procedure != "no_retrain" or cfg.structured.finetune:
        raise CheckpointError(
            "structured.checkpoints studies a pretrained model's own checkpoints as loaded: it needs model=hf with "
            "structured.procedure=no_retrain (no fine-tuning); for a network trained here use train.save_at"
        )
    points = parse(entries)
    final = cfg.structured.final_tokens
    tokens = [t for _, t in points]
    if final is None or sorted(set(tokens)) != tokens or tokens[-1] >= final:
        raise CheckpointError(
            f"structured.checkpoints tokens {tokens} must increase and stay below structured.final_tokens={final} "
            "(the tokens the final model, model.path, saw): set structured.final_tokens=<tokens>"
        )
    reference = shape_of(cfg.model.path, "model.path")
    for folder, _ in points:
        theirs = shape_of(folder, "structured.checkpoints")
        differ = {k: (theirs.get(k), reference.get(k)) for k in reference.keys() | theirs.keys()
                  if theirs.get(k) != reference.get(k)}  # fmt: skip
        if differ:
            raise CheckpointError(
                f"structured.checkpoints folder {folder!r} is not a checkpoint of model.path's architecture: "
                + ", ".join(f"{k} {a} (model.path: {b})" for k, (a, b) in sorted(differ.items()))
            )


def shape_of(folder: str, key: str) -> dict[str, Any]:
    config = Path(folder).expanduser() / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{key}: {folder!r} holds no config.json; give the folder a model was saved to")
    values = artifacts.read_json(config, "model config")
    values = values.get("text_config", values) if "num_hidden_layers" not in values else values  # Gemma 3 multimodal
    return {k: values[k] for k in SHAPE if k in values}


def run_checkpoints(
    setup: StructuredSpec, final: dict[str, Any], settings: dict[str, Any], measure: Callable
) -> dict[str, Any] | None:
    """Every checkpoint's study by `measure` (the study as loaded, lottery/structured/pretrained.py), then
    over_training.json and its figure; None without structured.checkpoints."""
    from hydra.utils import instantiate

    from lottery.config import without_name
    from lottery.console import say
    from lottery.structured.figures import plot_over_training
    from lottery.structured.series import point_records, settles

    entries = list(setup.cfg.structured.checkpoints)
    if not entries:
        return None
    points = []
    for folder, tokens in parse(entries):
        name = Path(folder).expanduser().name
        out = setup.paths.seed_dir / "no_retrain" / "series" / name
        path = out / "results.json"
        point_settings = settings | {"checkpoint": folder}
        results = artifacts.read_json(path, "checkpoint results") if path.is_file() else None
        if results is None or results.get("settings") != point_settings:
            say(f"checkpoint {folder} ({tokens:.3g} tokens)")
            cfg = dict(setup.model_cfg) | {"path": folder, "gguf_file": None}
            dm = setup.datamodule
            network = instantiate(without_name(cfg), input_shape=dm.input_shape, num_classes=dm.num_classes,
                                  _convert_="all")  # fmt: skip
            out.mkdir(parents=True, exist_ok=True)
            journal = Journal(out / "partial.json", point_settings)
            results, run = measure(setup, point_settings, journal, network=network)
            results["model"]["path"] = folder
            artifacts.write_json(run, out / "run.json")
            artifacts.write_json(results, path)
            journal.finish()
        points.append(({"checkpoint": folder}, tokens, results))
    points.append(({"checkpoint": setup.cfg.model.path}, setup.cfg.structured.final_tokens, final))
    parameters = final["model"]["parameters"]
    records = point_records(points, parameters, final, setup.cfg.seed)
    study = {
        "model": {"name": "hf", "parameters": parameters, "class": final["model"]["family"]},
        "data": final["data"],
        "tolerance": final.get("tolerance"),
        "confidence": final.get("confidence"),
        "points": records,
        "settles": settles(records),
    }
    artifacts.write_json(study, setup.paths.seed_dir / "over_training.json")
    plot_over_training(study, setup.paths.seed_dir / "over_training.png")
    return study
