"""What else breaks: the units a pretrained study removes for its own task, evaluated on other tasks and on general
text (LLM-KICK, Jaiswal et al. 2023: pruning that the benchmark forgives can cripple what it does not measure).

    lottery model=smollm2_135m data=icl_text data.task=capitals pruning.strategy=structured \\
        structured.procedure=no_retrain "structured.transfer=[antonyms,plural,lm:kjv.txt]"

`structured.transfer` lists the targets: a shipped word-list task by name (its held-out test prompts, drawn as the
study's own task is: same shots, number of test prompts and data.data_seed), a word list of one's own as a .tsv
path, or `lm:<text file>` (held-out documents of a plain text, documents separated by blank lines, cut into
`transfer_windows` windows of `transfer_context` tokens, as data=lm_text cuts it). For every kind and score of the
study (`transfer_scores`: a subset) and every grid fraction, the very units the study removed (for random: the same
draws, from the same seeds) are removed and every target measured: accuracy with its interval over the target's
held-out queries and the paired bound of its drop from dense; loss (a text's perplexity is exp(loss)) with its
interval over windows and the bound of its rise.

`removable` then says, per kind and score, the fraction claimed for the study's own task, for each other task (the
same claim: the drop within ticket.match_tolerance at the study's confidence, at that fraction and every smaller one),
and for all of them together; and each text's perplexity at the fraction claimed for the own task, beside random
removal of as many units. Written to seed_<s>/no_retrain/transfer.json (measurements kept in transfer.partial.json
while it runs, so a killed run resumes) and transfer.png.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from lottery.core import artifacts
from lottery.core.intervals import Resamples
from lottery.core.seeds import derive_seed
from lottery.structured.grid import GridSettings, meaningful, removable, removals
from lottery.structured.journal import Journal
from lottery.structured.points import mean_point

if TYPE_CHECKING:
    from lottery.structured.probe import Probe, Prompts
    from lottery.structured.spec import StructuredSpec

TEXT = "lm:"


@dataclass(frozen=True)
class Target:
    entry: str  # as given in structured.transfer
    kind: str  # task | text
    value: str  # the task's name, a word-list file, or a text file

    @property
    def name(self) -> str:
        """How reports name it: the task, or lm:<the text file's stem>."""
        return TEXT + Path(self.value).stem if self.kind == "text" else Path(self.value).stem


class TransferError(ValueError):
    pass


def parse(entries: list[str]) -> list[Target]:
    """The targets of structured.transfer, or TransferError naming the entry and the fix (no file is read here
    beyond checking that it exists)."""
    from lottery.data.text_pairs import TASKS

    targets = []
    for entry in entries:
        entry = str(entry)
        if entry.startswith(TEXT):
            path = entry[len(TEXT) :]
            if not Path(path).expanduser().is_file():
                raise TransferError(
                    f"structured.transfer entry {entry!r}: {path!r} is not a file; give lm:<a plain text file> "
                    "(documents separated by blank lines; experiments/README.md names a command that writes one)"
                )
            targets.append(Target(entry, "text", path))
        elif entry.endswith(".tsv"):
            if not Path(entry).expanduser().is_file():
                raise TransferError(f"structured.transfer entry {entry!r} is not a file; give a word list of x<TAB>y")
            targets.append(Target(entry, "task", entry))
        elif entry in TASKS:
            targets.append(Target(entry, "task", entry))
        else:
            raise TransferError(
                f"structured.transfer entry {entry!r} is not a shipped word list {list(TASKS)}, a .tsv word list or "
                "lm:<text file>"
            )
    if len({t.name for t in targets}) != len(targets):
        raise TransferError(
            f"structured.transfer={entries} lists a target twice (reports name a text by its file's stem: give "
            "two texts different names)"
        )
    return targets


def check(cfg: Any) -> None:
    """Run by lottery.validate: the targets exist and the study can measure them (before anything loads)."""
    s = cfg.structured
    if not s.transfer:
        return
    from lottery.structured.pretrained import scores_as_loaded

    if not scores_as_loaded(cfg):
        raise TransferError(
            "structured.transfer measures the units a study of a pretrained model as loaded removes; it needs "
            "model=hf (or a model preset), pruning.strategy=structured and structured.procedure=no_retrain"
        )
    targets = parse(list(s.transfer))
    if any(t.kind == "task" for t in targets) and cfg.data.name != "icl_text":
        raise TransferError(
            f"structured.transfer lists word-list tasks, which are drawn like the study's own data=icl_text task; "
            f"this study has data={cfg.data.name}: list only lm:<text> targets, or study data=icl_text"
        )
    for t in targets:
        if t.kind == "text":
            from lottery.data.lm_text import check_lm_settings

            check_lm_settings(text_settings(cfg, t))
    if s.transfer_windows < 1 or s.transfer_context < 2:
        raise TransferError(
            f"structured.transfer_windows={s.transfer_windows} must be >= 1 and structured.transfer_context="
            f"{s.transfer_context} >= 2 tokens"
        )
    unknown = [sc for sc in (s.transfer_scores or []) if sc not in s.grid_scores]
    if unknown:
        raise TransferError(
            f"structured.transfer_scores={list(s.transfer_scores)} names {unknown}, which the study does not score "
            f"(structured.grid_scores={list(s.grid_scores)}); list scores of the grid, or null for all"
        )


def text_settings(cfg: Any, target: Target) -> SimpleNamespace:
    s, d = cfg.structured, cfg.data
    return SimpleNamespace(
        path=target.value,
        context=s.transfer_context,
        test_fraction=0.2,
        num_test=s.transfer_windows,
        data_seed=d.data_seed,
        tokenizer=d.tokenizer,
        tokenizer_gguf=getattr(d, "tokenizer_gguf", None),
    )


def target_prompts(cfg: Any, target: Target) -> tuple[Prompts, Any]:
    """The held-out prompts of `target` and its task (metrics, chance)."""
    from lottery.structured.probe import Prompts

    if target.kind == "text":
        from lottery.data.lm_text import load_lm

        splits = load_lm(text_settings(cfg, target))
        return Prompts.of(splits.task, splits.x_test, splits.y_test), splits.task
    from lottery.data.text_icl import load_text

    settings = copy.copy(cfg.data)  # the study's own task settings (shots, test prompts, split), another word list
    settings.task, settings.task_file = target.value, (target.value if target.value.endswith(".tsv") else None)
    splits = load_text(settings)
    queries = getattr(splits.task, "test_queries", None)
    return Prompts.of(splits.task, splits.x_test, splits.y_test, queries), splits.task


def settings_of(setup: StructuredSpec, results: dict[str, Any]) -> dict[str, Any]:
    s = setup.cfg.structured
    return {
        "definitions": 1,
        "targets": [str(e) for e in s.transfer],
        "scores": None if s.transfer_scores is None else list(s.transfer_scores),
        "windows": s.transfer_windows,
        "context": s.transfer_context,
        "grid": results["settings"],  # the study whose removals these are
    }


def run_transfer(setup: StructuredSpec) -> dict[str, Any] | None:
    """seed_<s>/no_retrain/transfer.json for the study in no_retrain/results.json (reused while its settings are
    unchanged); None when structured.transfer lists nothing."""
    from lottery.console import say

    cfg = setup.cfg
    if not cfg.structured.transfer:
        return None
    path = setup.paths.seed_dir / "no_retrain" / "transfer.json"
    results = artifacts.read_json(path.with_name("results.json"), "no-retrain results")
    settings = settings_of(setup, results)
    if path.is_file():
        previous = artifacts.read_json(path, "transfer results")
        if previous.get("settings") == settings:
            say(f"found {path}: the transfer study is done")
            return previous
    journal = Journal(path.with_name("transfer.partial.json"), settings)
    out = measure(setup, results, settings, journal, say)
    artifacts.write_json(out, path)
    journal.finish()
    from lottery.structured.figures import transfer_figure

    transfer_figure(out, path.with_name("transfer.png"))
    return out


def measure(setup: StructuredSpec, results: dict[str, Any], settings: dict[str, Any], journal: Journal, say) -> dict:
    from lottery.structured.budget import batch_size_for
    from lottery.structured.pretrained import device_of, grid_settings, use_all_cores
    from lottery.structured.probe import Probe

    cfg = setup.cfg
    device = device_of(cfg.trainer.accelerator)
    use_all_cores(device, cfg.trainer.threads)
    network = setup.pretrained().to(device)
    layout, s = network.layout(), grid_settings(setup)
    scores = {name: {k: torch.tensor(v) for k, v in by.items()} for name, by in results["scores"].items()}
    chosen = cfg.structured.transfer_scores
    pairs = [(k, sc) for k, by in results["curves"].items() for sc in by if chosen is None or sc in chosen]
    targets = parse(list(cfg.structured.transfer))
    out: dict[str, Any] = {"settings": settings, "source": results["data"].get("task"), "targets": [], "dense": {}}
    curves: dict[str, dict[str, list]] = {k: {} for k, _ in pairs}
    for target in targets:
        prompts, task = target_prompts(cfg, target)
        batch = cfg.structured.batch_size or batch_size_for(
            network, prompts.x.shape[1], cfg.structured.memory_gb, False
        )
        probe = Probe(network, task, device, batch)
        on = On(probe, prompts, target, s, cfg.seed, journal)
        chance = task.chance(prompts.targets) if target.kind == "task" else None
        dense = on.dense()
        out["targets"].append(
            {
                "entry": target.entry,
                "name": target.name,
                "kind": target.kind,
                "prompts": len(prompts),
                "held_out_queries": on.resamples.clusters,
                "scored_tokens": int(sum(on.dense_tokens)),
                "chance": chance,
                "meaningful": chance is None or meaningful(dense["acc"], chance, s.min_above_chance),
            }
        )
        out["dense"][target.name] = dense
        say(f"transfer to {target.name}: dense accuracy {dense['acc']:.2%}, loss {dense['loss']:.4f}")
        for kind, score in pairs:
            points = curves[kind].setdefault(score, [{"fraction": f, "on": {}} for f in s.grid])
            for point in points:
                masks = removals(layout, kind, score, point["fraction"], scores, s, cfg.seed)
                point["removed"] = layout.size(kind) - int(masks[0].sum())
                point["on"][target.name] = on.removed(kind, score, point["fraction"], masks)
            say(f"transfer to {target.name}: {kind} by {score} done")
    out["curves"] = curves
    out["removable"] = summary(out, results, s)
    return out


class On:
    """Measurements on one target: dense, and with a kind's units removed; intervals on fixed resamples of the
    target's held-out queries (windows, for a text), paired with dense."""

    def __init__(self, probe: Probe, prompts: Prompts, target: Target, s: GridSettings, seed: int, journal: Journal):
        self.probe, self.prompts, self.target, self.s, self.journal = probe, prompts, target, s, journal
        self.resamples = Resamples.of(prompts.groups(), s.bootstrap, derive_seed(seed, 131))
        self.dense_hits: list[float] = []
        self.dense_nll: list[float] = []
        self.dense_tokens: list[int] = []

    def _measure(self, key: str, removed: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        return self.journal.value(
            f"{self.target.entry}/{key}", lambda: self.probe.evaluate(self.prompts, removed, nll=True)
        )

    def dense(self) -> dict[str, Any]:
        d = self._measure("dense", None)
        self.dense_hits, self.dense_nll, self.dense_tokens = d["hits"], d["nll"], d["tokens"]
        return self._marked(d, reference=False)

    def removed(self, kind: str, score: str, fraction: float, masks: list[torch.Tensor]) -> dict[str, Any]:
        draws = [
            self._measure(f"{kind}/{score}/{fraction!r}" + (f"/{i}" if score == "random" else ""), {kind: ~kept})
            for i, kept in enumerate(masks)
        ]
        point = mean_point(draws)
        point["nll"] = [sum(v) / len(v) for v in zip(*(d["nll"] for d in draws), strict=True)]
        return self._marked(point, reference=True)

    def _marked(self, point: dict[str, Any], reference: bool) -> dict[str, Any]:
        """The point's intervals (and, against dense, the bounds of its accuracy drop and loss rise), without the
        per-prompt lists (kept in the journal only)."""
        r, c, tokens = self.resamples, self.s.confidence, self.dense_tokens
        unit = tokens if self.probe.token_accuracy else None
        out = {k: v for k, v in point.items() if k not in ("hits", "nll", "tokens", "by_context")}
        out["acc_ci"] = r.interval(point["hits"], unit, c)
        out["loss_ci"] = r.interval(point["nll"], tokens, c)
        if reference:
            out["drop_bound"] = r.drop_bound(self.dense_hits, point["hits"], unit, c)
            out["loss_rise_bound"] = r.drop_bound(point["nll"], self.dense_nll, tokens, c)
        if self.target.kind == "text":
            out["perplexity"] = math.exp(point["loss"])
        return out


def summary(out: dict[str, Any], results: dict[str, Any], s: GridSettings) -> dict[str, Any]:
    """Per kind and score: the fraction claimed for the own task, for each task target (None where the model does not
    do that task: its dense accuracy within structured.min_above_chance of chance), for the own task and every
    meaningful target together; each text's perplexity at the own task's fraction, beside random at that fraction."""
    meaningful_tasks = [t["name"] for t in out["targets"] if t["kind"] == "task" and t["meaningful"]]
    tasks = [t["name"] for t in out["targets"] if t["kind"] == "task"]
    texts = [t["name"] for t in out["targets"] if t["kind"] == "text"]
    claims: dict[str, Any] = {}
    for kind, by in out["curves"].items():
        claims[kind] = {}
        for score, points in by.items():
            own = results["removable"][kind][score]
            on = {
                t: _claim([(p["fraction"], p["on"][t]["drop_bound"]) for p in points], s)
                if t in meaningful_tasks
                else None
                for t in tasks
            }
            together = [
                (p["fraction"], max([q["drop_bound"], *(p["on"][t]["drop_bound"] for t in meaningful_tasks)]))
                for p, q in zip(points, results["curves"][kind][score], strict=True)
            ]
            entry: dict[str, Any] = {"own": own, "tasks": on, "all": _claim(together, s) if own is not None else None}
            if texts:
                fraction = own or 0.0
                at = next((p for p in points if p["fraction"] == fraction), None)
                rand = by.get("random")
                at_random = next((p for p in rand if p["fraction"] == fraction), None) if rand else None
                entry["text_at_own"] = {
                    t: {
                        "fraction": fraction,
                        "perplexity": at["on"][t]["perplexity"] if at else out["dense"][t]["perplexity"],
                        "dense_perplexity": out["dense"][t]["perplexity"],
                        "random_perplexity": at_random["on"][t]["perplexity"] if at_random else None,
                    }
                    for t in texts
                }
            claims[kind][score] = entry
    return claims


def _claim(points: list[tuple[float, float]], s: GridSettings) -> float:
    """The largest fraction whose drop bound, and every smaller fraction's, is within the tolerance."""
    return removable([(f, -bound) for f, bound in points], 0.0, s.tolerance)
