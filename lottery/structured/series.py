"""The no-retrain study along a checkpoint series (train.save_at): is a network that has seen more tokens per
parameter harder to prune, and from which step does its importance ranking agree with the final one?

Level 0 keeps its network at the series' steps (lottery/core/series.py, seed_<s>/series/step_<n>.ckpt). Each point
gets the study the final network gets (lottery/structured/level0.py: the grid of every unit kind and score with the
random control, the weights kind, the dead-unit census), in no_retrain/series/step_<n>/results.json, each resumable
on its own (its partial.json). Then seed_<s>/over_training.json, one record per point, the final network last:

    {"model": {"parameters", "shape"...}, "tokens_per_step", "final_step",
     "points": [{"step", "tokens", "tokens_per_parameter", "final",
                 "dense": {"acc", "acc_ci", "loss", "perplexity"},
                 "removable": {kind: {score: fraction or null}},   # within tolerance at the study's confidence
                 "weights": {score: {"<pattern or fraction>": {"density", "perplexity", "perplexity_ratio"}}},
                 "dead_units": {"dead", "units", "fraction"},
                 "agreement": {kind: {score: {"spearman", "spearman_random", "top_k", "top_k_overlap",
                                              "top_k_random", "units"}}}}],   # against the final point's scores
     "settles": {kind: {score: first step from which every later point has Spearman >= 0.8, or null}},
     "cost": {"training_seconds", "study_seconds", "study_over_training"}}

and over_training.png: removable fraction, ranking agreement and the weights' perplexity at 50% against tokens per
parameter. Tokens: steps x batch size x tokens per training example (a text window's tokens, a prompt's length).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.core.agreement import agreement
from lottery.core.seeds import derive_seed
from lottery.data.tasks import IGNORE
from lottery.structured.journal import Journal

if TYPE_CHECKING:
    from lottery.core.layout import RunPaths
    from lottery.structured.spec import StructuredSpec

# the study of one network: (setup, settings, journal, network) -> (results, run)
Measure = Callable[[Any, dict[str, Any], Journal, torch.nn.Module], tuple[dict[str, Any], dict[str, Any]]]
SETTLED = 0.8  # Spearman at which a point's ranking "agrees" with the final one
RANKED = ("magnitude", "gradient", "single", "token_gradient", "angular")  # scores whose rankings are compared


class SeriesPointError(artifacts.ArtifactError):
    pass


def point_weights(path: Path) -> dict[str, torch.Tensor]:
    """The network's weights in a series checkpoint (a whole Lightning checkpoint of the training state)."""
    state = artifacts.load_torch(path, "series checkpoint")["state_dict"]
    return {k.removeprefix(artifacts.PREFIX): v for k, v in state.items()}


def check_series(paths: RunPaths, steps: tuple[int, ...], network: torch.nn.Module) -> None:
    """Run by setup.prepare before anything is written: every point that level 0 has already trained past is on disk,
    and every point on disk holds this network's weights (names and shapes); a refusal names the file or the steps."""
    if not steps:
        return
    level0 = paths.level(0)
    passed = math.inf if level0.done else _step_of(level0.last_checkpoint)
    missing = [n for n in steps if n <= passed and not paths.series_point(n).is_file()]
    if missing:
        raise SeriesPointError(
            f"train.save_at asks for steps {missing}, which {paths.series} does not hold: level 0 was trained past "
            f"them before they were asked for; train level 0 again (delete {level0.dir} and {paths.rewind}) or "
            "leave those steps out of train.save_at"
        )
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    for n in steps:
        path = paths.series_point(n)
        if not path.is_file():
            continue
        try:
            got = {k: tuple(v.shape) for k, v in point_weights(path).items()}
        except (artifacts.ArtifactError, KeyError, AttributeError, TypeError) as err:
            raise SeriesPointError(f"{path} is not a training checkpoint ({err}); train level 0 again") from None
        if got != expected:
            diff = sorted(set(got.items()) ^ set(expected.items()))[:3]
            raise SeriesPointError(
                f"{path} holds another network's weights than this run's {type(network).__name__} (first differences: "
                f"{diff}); it was not written by this run: delete it and train level 0 again"
            )


def _step_of(checkpoint: Path) -> float:
    """The step a level's resume checkpoint was saved at (0 without one)."""
    if not checkpoint.is_file():
        return 0
    return artifacts.load_torch(checkpoint, "resume checkpoint").get("global_step", 0)


def run_series(
    setup: StructuredSpec, final: dict[str, Any], settings: dict[str, Any], measure: Measure
) -> dict[str, Any] | None:
    """Every series point's study and over_training.json (None when train.save_at keeps no point); `measure` is the
    final network's study (lottery/structured/level0.py), run on each point's weights."""
    from lottery.console import say

    steps = setup.series_steps
    if not steps:
        return None
    check_series(setup.paths, steps, setup.network())  # as prepare did: the points training was to write are there
    results = {}
    for n in steps:
        folder = setup.paths.seed_dir / "no_retrain" / "series" / f"step_{n}"
        results[n] = _point(setup, n, folder, settings | {"series_step": n}, measure, say)
    study = summarise(setup, results, final)
    artifacts.write_json(study, setup.paths.seed_dir / "over_training.json")
    from lottery.structured.figures import plot_over_training

    plot_over_training(study, setup.paths.seed_dir / "over_training.png")
    return study


def _point(setup, step: int, folder: Path, settings: dict[str, Any], measure: Measure, say) -> dict[str, Any]:
    path = folder / "results.json"
    if path.is_file():
        previous = artifacts.read_json(path, "series point results")
        if previous.get("settings") == settings:
            return previous
    say(f"series point: step {step} ({setup.paths.series_point(step)})")
    network = setup.network()
    network.load_state_dict(point_weights(setup.paths.series_point(step)))
    folder.mkdir(parents=True, exist_ok=True)
    journal = Journal(folder / "partial.json", settings)
    results, run = measure(setup, settings, journal, network)
    artifacts.write_json(run, folder / "run.json")
    artifacts.write_json(results, path)
    journal.finish()
    return results


def tokens_per_example(dm: Any) -> float:
    """Tokens a training example feeds the network: a text window's real tokens (its scored targets and the one
    before the first), or a prompt's whole length."""
    y = dm.y_train
    if getattr(dm.task, "token_accuracy", False) and y.dim() == 2 and y.shape == dm.x_train.shape:
        return float(((y != IGNORE).sum(1) + 1).double().mean())
    return float(dm.x_train.shape[1]) if dm.x_train.dim() >= 2 else 1.0


def summarise(setup: StructuredSpec, by_step: dict[int, dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    dm = setup.datamodule
    network = setup.network()
    parameters = sum(p.numel() for p in network.parameters())
    per_step = setup.cfg.train.batch_size * tokens_per_example(dm)
    points = [({"step": n}, n * per_step, r) for n, r in sorted(by_step.items())]
    points.append(({"step": setup.total_steps}, setup.total_steps * per_step, final))
    records = point_records(points, parameters, final, setup.cfg.seed)
    return {
        "model": {"name": setup.cfg.model.name, "parameters": parameters, "class": type(network).__name__},
        "data": {"name": setup.cfg.data.name, "path": getattr(setup.cfg.data, "path", None)},
        "batch_size": setup.cfg.train.batch_size,
        "tokens_per_example": tokens_per_example(dm),
        "tokens_per_step": per_step,
        "final_step": setup.total_steps,
        "tolerance": final.get("tolerance"),
        "confidence": final.get("confidence"),
        "points": records,
        "settles": settles(records),
        "cost": _cost(setup, by_step, final),
    }


def point_records(
    points: list[tuple[dict[str, Any], float, dict[str, Any]]], parameters: int, final: dict[str, Any], seed: int
) -> list[dict[str, Any]]:
    """One record per (what names the point, tokens seen, its study's results); the last point is the final one."""
    return [
        name
        | {
            "tokens": tokens,
            "tokens_per_parameter": tokens / parameters,
            "final": i == len(points) - 1,
            "dense": _dense(r),
            "removable": r.get("removable", {}),
            "weights": _weights(r),
            "dead_units": _dead(r),
            "agreement": _agreement(r, final, seed),
        }
        for i, (name, tokens, r) in enumerate(points)
    ]


def _dense(r: dict[str, Any]) -> dict[str, Any]:
    d = r["dense"]
    return {"acc": d["acc"], "acc_ci": d.get("acc_ci"), "loss": d["loss"], "perplexity": math.exp(d["loss"])}


def _weights(r: dict[str, Any]) -> dict[str, Any]:
    if "weights" not in r:
        return {}
    dense = r["weights"]["dense"]["perplexity"]
    out: dict[str, dict[str, Any]] = {}

    def entry(p: dict[str, Any]) -> dict[str, Any]:
        return {"density": p["density"], "perplexity": p["perplexity"], "perplexity_ratio": p["perplexity"] / dense}

    for score, curve in r["curves"]["weights"].items():
        out[score] = {f"{p['fraction']!r}": entry(p) for p in curve}
    for pattern, by_score in r.get("weight_patterns", {}).items():
        for score, p in by_score.items():
            out.setdefault(score, {})[pattern] = entry(p)
    return out


def _dead(r: dict[str, Any]) -> dict[str, Any] | None:
    c = r.get("census")
    return None if c is None else {"dead": c["dead_total"], "units": c["units_total"], "fraction": c["fraction"]}


def _agreement(r: dict[str, Any], final: dict[str, Any], seed: int) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for score in RANKED:
        for kind, values in r.get("scores", {}).get(score, {}).items():
            reference = final.get("scores", {}).get(score, {}).get(kind)
            if reference is None:
                continue
            a, b = torch.tensor(values, dtype=torch.float64), torch.tensor(reference, dtype=torch.float64)
            out.setdefault(kind, {})[score] = agreement(a, b, derive_seed(seed, 151, RANKED.index(score)))
    return out


def settles(records: list[dict[str, Any]]) -> dict[str, dict[str, int | None]]:
    """Per kind and score: the first step from which every later point's ranking has Spearman >= SETTLED with the
    final one (the final point itself is 1 by definition and is not counted), or None if none does."""
    out: dict[str, dict[str, int | None]] = {}
    earlier = [r for r in records if not r["final"]]
    pairs = {(k, s) for r in earlier for k, by in r["agreement"].items() for s in by}
    for kind, score in sorted(pairs):
        first = None
        for r in reversed(earlier):
            rho = r["agreement"].get(kind, {}).get(score, {}).get("spearman")
            if rho is None or not rho >= SETTLED:
                break
            first = r.get("step", r.get("checkpoint"))
        out.setdefault(kind, {})[score] = first
    return out


def _cost(setup: StructuredSpec, by_step: dict[int, dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Training seconds of level 0 (its metrics.json) against the seconds of every point's study and the final
    one's (their run.json: a resumed study counts since it resumed)."""
    metrics = setup.paths.level(0).metrics
    training = artifacts.read_json(metrics, "level 0 metrics").get("train_seconds") if metrics.is_file() else None
    runs = [setup.paths.seed_dir / "no_retrain" / "series" / f"step_{n}" / "run.json" for n in by_step]
    runs.append(setup.paths.seed_dir / "no_retrain" / "run.json")
    seconds = [artifacts.read_json(p, "run record")["seconds"] for p in runs if p.is_file()]
    study = sum(seconds) if len(seconds) == len(runs) else None
    return {
        "training_seconds": training,
        "study_seconds": study,
        "study_over_training": study / training if study is not None and training else None,
    }
