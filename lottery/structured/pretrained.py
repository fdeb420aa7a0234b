"""The published protocol on a pretrained model (Bansal et al. 2023): model=hf with structured.procedure=no_retrain
scores and removes units of the weights as loaded. Nothing trains and no weights are written: the artifacts are the
scores, the removal curves, the layer-by-layer removals, the dead-unit census and the report.

    lottery model=hf model.path=../shared/models/smollm2-135m-instruct-gguf \\
        model.gguf_file=SmolLM2-135M-Instruct.Q4_1.gguf data=icl_text data.task=capitals \\
        pruning.strategy=structured structured.procedure=no_retrain "structured.grid_units=[heads,mlp_blocks,layers]"

Fine-tuning first (training level 0 on the task's prompts, then the grid on its weights) stays possible, named:
structured.finetune=true. Everything runs on the trainer's device (trainer=gpu: the GPU) in model.dtype, in batches
sized from structured.memory_gb (or structured.batch_size), on every core of this process on a CPU.

Files, under seed_<s>/: no_retrain/results.json (recomputed only when its settings change; while a study runs,
no_retrain/partial.json keeps every measurement made so far, and a re-run resumes from it: lottery/structured/
journal.py), no_retrain/run.json (device, threads, batch, seconds, peak memory, the grid's timing), structured.json
and its figures (heads_curve.png, heads_survival.png, icl_by_context.png, layers.png).
"""

from __future__ import annotations

import os
import resource
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from lottery.console import say
from lottery.core import artifacts
from lottery.data.tasks import IGNORE
from lottery.structured.budget import batch_size_for
from lottery.structured.grid import GridSettings, grid_record, run_grid
from lottery.structured.journal import Journal
from lottery.structured.probe import Probe, Prompts

if TYPE_CHECKING:
    from lottery.structured.spec import StructuredSpec
    from lottery.training.tracking import Tracker


def scores_as_loaded(cfg: Any) -> bool:
    """Whether this run scores the pretrained weights as they are (no level is trained)."""
    return cfg.model.name == "hf" and cfg.structured.procedure == "no_retrain" and not cfg.structured.finetune


def device_of(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"trainer.accelerator={accelerator} but torch sees no CUDA GPU; use trainer=cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def use_all_cores(device: torch.device, threads: int | None) -> int:
    """A pretrained study is one process doing forward passes: on a CPU it takes every core it may use, or more if
    trainer.threads says so (the cpu trainer's default of 1 is meant for training jobs side by side)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device.type == "cpu":
        torch.set_num_threads(max(cores, threads or 1))
    return torch.get_num_threads()


def grid_settings(setup: StructuredSpec) -> GridSettings:
    s = setup.cfg.structured
    return GridSettings(
        grid=tuple(s.grid),
        units=tuple(s.grid_units),
        scores=tuple(s.grid_scores),
        random_draws=s.random_draws,
        tolerance=setup.cfg.ticket.match_tolerance,
        min_above_chance=s.min_above_chance,
        confidence=s.confidence,
        bootstrap=s.bootstrap,
        single_heads=s.single_heads,
        patterns=tuple(s.weight_patterns) if "weights" in s.grid_units else (),
    )


def settings_of(setup: StructuredSpec) -> dict[str, Any]:
    return grid_record(setup.cfg.structured, setup.cfg.ticket.match_tolerance)


def data_info(setup: StructuredSpec) -> dict[str, Any]:
    d, dm = setup.cfg.data, setup.datamodule
    info = {"name": d.name, "test_prompts": len(dm.x_test)}
    for key in ("task", "task_file", "shots", "data_seed", "path", "context"):
        if hasattr(d, key):
            value = getattr(d, key)
            info[key] = list(value) if isinstance(value, (list, tuple)) else value
    distinct = getattr(dm.task, "distinct_queries", None)
    if distinct is not None:
        info["distinct_test_queries"] = distinct
    return info


def run_pretrained(setup: StructuredSpec, tracker: Tracker | None = None) -> dict[str, Any]:
    """The study of one seed: results.json, structured.json and figures (reused when the settings are unchanged)."""
    from lottery.structured.report import write_pretrained_report

    path = setup.paths.seed_dir / "no_retrain" / "results.json"
    settings = settings_of(setup)
    previous = artifacts.read_json(path, "no-retrain results") if path.is_file() else None
    if previous is not None and previous.get("settings") == settings:
        say(f"found {path}: the grid is done; re-writing the report only")
        results = previous
    else:
        journal = Journal(path.with_name("partial.json"), settings)
        results, run = measure(setup, settings, journal)
        artifacts.write_json(run, path.with_name("run.json"))  # before results.json: a finished study has both
        artifacts.write_json(results, path)
        journal.finish()
    from lottery.structured.checkpoints import run_checkpoints

    run_checkpoints(setup, results, settings, measure)  # structured.checkpoints: the study along its training
    return write_pretrained_report(setup, results, tracker)


def measure(
    setup: StructuredSpec,
    settings: dict[str, Any],
    journal: Journal | None = None,
    network: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, run): everything measured, and how this run went (device, threads, batch, seconds, memory, the
    grid's timing), apart, since a study resumed from `journal` has the same results but not the same run.
    `network`: other weights than the pretrained ones as loaded (a fine-tuned level 0)."""
    from lottery.structured.census import ffn_census

    cfg, dm = setup.cfg, setup.datamodule
    device = device_of(cfg.trainer.accelerator)
    threads = use_all_cores(device, cfg.trainer.threads)
    started = time.perf_counter()
    what = "as loaded" if network is None else "fine-tuned (level 0)"
    network = (network if network is not None else setup.pretrained()).to(device)
    test = Prompts.of(dm.task, dm.x_test, dm.y_test, getattr(dm.task, "test_queries", None))
    scoring = Prompts.of(dm.task, dm.x_train, dm.y_train).head(cfg.structured.score_examples)
    kinds = tuple(cfg.structured.grid_units)
    backward = bool({"gradient", "token_gradient"} & set(cfg.structured.grid_scores)) or {"heads", "mlp_blocks"} <= set(
        kinds
    )
    batch = cfg.structured.batch_size or batch_size_for(network, test.x.shape[1], cfg.structured.memory_gb, backward)
    probe = Probe(network, dm.task, device, batch, say=say)
    say(
        f"scoring {type(network.lm).__name__} {what} on {device} ({network.lm.dtype}, {threads} threads), "
        f"{len(test)} test and {len(scoring)} scoring prompts, {batch} per batch"
    )
    weights = {n: p.detach() for n, p in network.named_parameters()}
    results, timing = run_grid(
        probe,
        test,
        scoring,
        network.layout(),
        weights,
        grid_settings(setup),
        cfg.seed,
        dm.task.chance(dm.y_test),
        layers=list(network.decoder_layers()),
        say=say,
        journal=journal,
    )
    ids, real = census_batches(test, batch)
    census = partial(ffn_census, network, ids, relative=cfg.structured.census_relative, mask=real)
    results["census"] = journal.value("census", census) if journal is not None else census()
    say(f"dead FFN units: {results['census']['dead_total']} of {results['census']['units_total']}")
    info = data_info(setup) | {"scoring_prompts": len(scoring)}
    results |= {"settings": settings, "data": info, "model": model_info(setup, network)}
    run = {
        "device": str(device),
        "threads": threads,
        "batch_size": batch,
        "seconds": time.perf_counter() - started,  # of this run (a resumed one: since it resumed)
        # the process's peak resident memory so far (in a multirun: over every job before this one too)
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "timing": timing,
    }
    return results, run


def census_batches(test: Prompts, batch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Input ids per batch, and the tokens that count: every token up to each prompt's last scored position."""
    at = test.targets != IGNORE
    last = torch.where(at, torch.arange(at.shape[1]), -1).max(1).values
    real = torch.arange(at.shape[1])[None, :] <= last[:, None]
    starts = range(0, len(test), batch)
    return [test.x[i : i + batch] for i in starts], [real[i : i + batch] for i in starts]


def model_info(setup: StructuredSpec, network: Any) -> dict[str, Any]:
    m = setup.cfg.model
    return {
        "path": m.path,
        "fetched": getattr(m, "fetched", None),  # the catalog name of a model=<name> preset (lottery-models)
        "gguf_file": getattr(m, "gguf_file", None),
        "quantization": getattr(network, "quantization", None),
        "family": network.family_name,
        "dtype": m.dtype,
        "parameters": sum(p.numel() for p in network.parameters()),
        "shape": vars(network.shape),
    }
