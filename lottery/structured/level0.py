"""The no-retrain grid on a trained level 0 (Bansal et al.'s protocol after training): score every unit of the dense
trained network once, remove the least important x% of each kind for x in structured.grid, evaluate with no
retraining. One evaluator for every network (lottery/structured/probe.py): a pretrained model fine-tuned first
(model=hf with structured.finetune=true, or structured IMP's grid on model=hf) exactly as the study as loaded
(lottery/structured/pretrained.py: intervals, layers, census); a network trained from scratch (lottery.models.
Transformer on recall or regression prompts) by its task's own loss and accuracy, with the same curves, intervals over
prompts and claims.

Files: seed_<s>/no_retrain/results.json (recomputed only when its settings change; no_retrain/partial.json keeps the
measurements while it runs, so a killed run resumes) and run.json.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.structured.grid import run_grid
from lottery.structured.journal import Journal
from lottery.structured.probe import Probe, Prompts
from lottery.structured.series import run_series

if TYPE_CHECKING:
    from lottery.structured.spec import StructuredSpec

# Scores that need a pretrained language model's tokens (per-token gates, hidden states across layers): a network
# from scratch is ranked by the others.
TOKEN_SCORES = ("token_gradient", "angular")
SCRATCH_BATCH = 256  # prompts per pass for a network from scratch (memory only: sums do not depend on it)


def grid_on_level0(setup: StructuredSpec) -> dict[str, Any]:
    from lottery.structured.pretrained import settings_of

    path = setup.paths.seed_dir / "no_retrain" / "results.json"
    settings = settings_of(setup) | {"weights": "level_0 (trained)", "evaluator": "probe"}
    if path.is_file():
        previous = artifacts.read_json(path, "no-retrain results")
        if previous.get("settings") == settings:
            run_series(setup, previous, settings, study_of)
            return previous
    network = setup.network()
    network.load_state_dict(artifacts.load_torch(setup.paths.level(0).weights, "trained level 0 weights"))
    journal = Journal(path.with_name("partial.json"), settings)
    results, run = study_of(setup, settings, journal, network)
    artifacts.write_json(run, path.with_name("run.json"))
    artifacts.write_json(results, path)
    journal.finish()
    run_series(setup, results, settings, study_of)  # the same study at each point of train.save_at
    return results


def study_of(setup: StructuredSpec, settings: dict[str, Any], journal: Journal, network: torch.nn.Module):
    """(results, run) of one trained network: a fine-tuned pretrained model as the study as loaded, a network from
    scratch by its task's own metrics."""
    from lottery.structured.pretrained import measure

    if setup.cfg.model.name == "hf":
        return measure(setup, settings, journal, network=network)
    return measure_scratch(setup, settings, journal, network)


def measure_scratch(
    setup: StructuredSpec, settings: dict[str, Any], journal: Journal, network: torch.nn.Module
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The grid of a network trained from scratch, on the CPU (where it trained), by the task's own metrics."""
    from dataclasses import replace

    from lottery.console import say
    from lottery.structured.pretrained import grid_settings

    cfg, dm = setup.cfg, setup.datamodule
    started = time.perf_counter()
    test = Prompts.of(dm.task, dm.x_test, dm.y_test)
    scoring = Prompts.of(dm.task, dm.x_train, dm.y_train).head(cfg.structured.score_examples)
    probe = Probe(network, dm.task, torch.device("cpu"), cfg.structured.batch_size or SCRATCH_BATCH, say=say)
    s = grid_settings(setup)
    s = replace(s, scores=tuple(sc for sc in s.scores if sc not in TOKEN_SCORES))
    ignored = [sc for sc in cfg.structured.grid_scores if sc in TOKEN_SCORES]
    if ignored:
        say(f"{', '.join(ignored)} need a pretrained language model: {type(network).__name__} is ranked without them")
    weights = {n: p.detach() for n, p in network.named_parameters()}
    results, timing = run_grid(
        probe,
        test,
        scoring,
        network.layout(),
        weights,
        s,
        cfg.seed,
        dm.task.chance(dm.y_test),
        say=say,
        journal=journal,
    )
    if not test.x.is_floating_point() and test.targets.shape == test.x.shape:  # token prompts: a dead-unit census
        from functools import partial

        from lottery.structured.census import ffn_census
        from lottery.structured.pretrained import census_batches

        ids, real = census_batches(test, probe.batch_size)
        census = partial(ffn_census, network, ids, relative=cfg.structured.census_relative, mask=real)
        results["census"] = journal.value("census", census)
    results |= {"settings": settings, "data": {"name": cfg.data.name, "test_prompts": len(test)}}
    run = {"device": "cpu", "batch_size": probe.batch_size, "seconds": time.perf_counter() - started, "timing": timing}
    return results, run
