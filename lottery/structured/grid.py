"""Pruning without retraining (the protocol of Bansal et al. 2023): score every unit once, remove the least important
x% of one kind's units for each x in the grid, evaluate the rest as it is. Shared by a pretrained model scored as
loaded (lottery/structured/pretrained.py) and a network trained from scratch to level 0 (no_retrain.py).

Kinds: heads, mlp_units, mlp_blocks, layers (whole decoder blocks, removed as the identity). Each kind is pruned on
its own, ranked over all layers together, by every score that applies to it:

    magnitude       heads, FFN units and blocks: the L2 norm of the unit's weights
    gradient        every kind: mean over prompts of |<dL/dA_u, A_u>| (Michel et al. 2019), on the scoring prompts
                    (never the test prompts)
    token_gradient  heads: sum over prompts and positions of |<dL/dA_h(t), A_h(t)>|, normalised by token counts, as
                    Bansal et al. 2023's released code scores heads (Probe.token_head_scores says where ours differs)
    angular         layers: the angular distance between a layer's input and output (Gromov et al. 2024)
    single          layers and FFN blocks (heads with structured.single_heads): the accuracy drop on the scoring
                    prompts when that unit alone is removed, ties broken by the loss rise (Bansal et al. rank FFNs so)
    random          every kind: as many units at random, `random_draws` times (the control; mean and spread)

Every accuracy carries `acc_ci`, a two-sided `confidence` interval from a bootstrap over the distinct held-out
queries (lottery/core/intervals.py), and every curve point `drop_bound`, the one-sided upper bound of its drop from
dense on the same resamples. `removable` claims the largest fraction whose drop is within the tolerance at that
confidence (drop_bound <= tolerance, and at every smaller fraction); `removable_point` is the same walk on the point
estimates alone, which is what the study claimed before intervals.

`combined` is the paper's heads-then-FFN step: the heads removable within tolerance stay removed, the FFN blocks are
scored again on that model (gradient) and removed on top of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lottery.core.intervals import Resamples
from lottery.core.matching import last_matching
from lottery.core.pruning import keep_count
from lottery.core.seeds import derive_seed
from lottery.core.unit_scores import magnitude_scores
from lottery.core.units import UnitLayout, keep_top, random_scores
from lottery.structured.journal import Journal, memory
from lottery.structured.points import mean_point
from lottery.structured.probe import Probe, Prompts

APPLIES = {
    "magnitude": ("heads", "mlp_units", "mlp_blocks", "weights"),
    "gradient": ("heads", "mlp_units", "mlp_blocks", "layers"),
    "token_gradient": ("heads",),
    "angular": ("layers",),
    "single": ("heads", "mlp_blocks", "layers"),  # heads only with single_heads (a pass per head)
    "random": ("heads", "mlp_units", "mlp_blocks", "layers", "weights"),
    "wanda": ("weights",),
}
DRAW_TAGS = ("heads", "mlp_units", "mlp_blocks", "layers", "weights")  # stable order: a kind's draws keep their seeds


@dataclass(frozen=True)
class GridSettings:
    grid: tuple[float, ...]  # fractions of a kind's units removed
    units: tuple[str, ...]  # kinds
    scores: tuple[str, ...]  # scores, applied to the kinds they apply to (APPLIES)
    random_draws: int
    tolerance: float  # accuracy below dense that still counts as "removable"
    min_above_chance: float  # dense accuracy must beat chance by this much before a fraction is claimed
    confidence: float = 0.95  # of the intervals, and of the claim that a drop is within tolerance
    bootstrap: int = 2000  # resamples of the held-out queries
    single_heads: bool = False  # rank heads by knock-out too (one evaluation of the scoring prompts per head)
    patterns: tuple[str, ...] = ()  # N:M patterns of the weights kind ("2:4"), beside its unstructured curve

    def applies(self, kind: str, score: str) -> bool:
        return kind in APPLIES[score] and not (score == "single" and kind == "heads" and not self.single_heads)

    def pairs(self) -> list[tuple[str, str]]:
        """(kind, score) of the unit curves (weights: lottery/structured/weights.py has its own)."""
        return [(k, s) for k in self.unit_kinds for s in self.scores if self.applies(k, s)]

    @property
    def unit_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in self.units if k != "weights")


def grid_record(s: Any, tolerance: float) -> dict[str, Any]:
    """What a grid's results depend on beyond the hashed config (structured.grid* and friends are not hashed), kept in
    results.json: a re-run recomputes the grid only when this changes."""
    return {
        # the version of the scores' and claims' definitions: bumped when one changes, so an old results.json is
        # measured again rather than reused (2: intervals, token_gradient, single by accuracy drop then loss rise)
        "definitions": 2,
        "grid": list(s.grid),
        "units": list(s.grid_units),
        "scores": list(s.grid_scores),
        "random_draws": s.random_draws,
        "score_examples": s.score_examples,
        "tolerance": tolerance,
        "min_above_chance": s.min_above_chance,
        "census_relative": s.census_relative,
        "confidence": s.confidence,
        "bootstrap": s.bootstrap,
        "single_heads": s.single_heads,
    } | ({"weight_patterns": list(s.weight_patterns)} if "weights" in s.grid_units else {})


def draw_seed(seed: int, kind: str, draw: int) -> int:
    """A seed per (run seed, kind, draw) for the random removals, apart from every training stream."""
    return derive_seed(seed, DRAW_TAGS.index(kind) + 101, draw)


def removable(points: Sequence[tuple[float, float]], dense_acc: float, tolerance: float) -> float:
    """The largest fraction removed, walking `points` (fraction, accuracy) by increasing fraction, before the first
    accuracy below dense_acc - tolerance (0.0 when the first point already fails)."""
    best = last_matching(sorted(points), dense_acc, tolerance)  # the one definition (lottery/core/matching.py)
    return 0.0 if best is None else best


def meaningful(dense_acc: float, chance: float, margin: float) -> bool:
    """Whether 'removable within tolerance' means anything: a model at chance loses nothing by losing any unit."""
    return dense_acc - chance >= margin


@dataclass(frozen=True)
class Intervals:
    """The study's resamples of the held-out queries, the dense model's hits and the tokens per prompt: every
    accuracy's interval and every drop's bound are read on these same draws (paired)."""

    resamples: Resamples
    dense_hits: list[float]
    tokens: list[int] | None  # scored tokens per prompt for token accuracy; None: one unit per prompt
    confidence: float

    @classmethod
    def of(cls, test: Prompts, dense: dict[str, Any], s: GridSettings, seed: int, token_accuracy: bool) -> Intervals:
        resamples = Resamples.of(test.groups(), s.bootstrap, derive_seed(seed, 131))
        return cls(resamples, dense["hits"], dense["tokens"] if token_accuracy else None, s.confidence)

    def ci(self, hits: list[float]) -> list[float]:
        return self.resamples.interval(hits, self.tokens, self.confidence)

    def mark(self, point: dict[str, Any]) -> dict[str, Any]:
        """`point` with its interval and the upper bound of its drop from dense."""
        point["acc_ci"] = self.ci(point["hits"])
        point["drop_bound"] = self.resamples.drop_bound(self.dense_hits, point["hits"], self.tokens, self.confidence)
        return point


class Clock:
    """Progress: one line per kind and score with the time it took and an estimate of the time left, from the
    mean seconds of an evaluation so far (a grid is evaluations)."""

    def __init__(self, evaluations: int, say: Callable[[str], None]) -> None:
        self.total, self.done, self.seconds, self.say = evaluations, 0, 0.0, say

    def timed(self, fn: Callable[[], Any], count: bool = True) -> Any:
        start = time.perf_counter()
        out = fn()
        if count:
            self.done += 1
            self.seconds += time.perf_counter() - start
        return out

    def kept(self, journal: Journal, key: str, fn: Callable[[], Any], timed: bool = True) -> Any:
        """An evaluation kept in `journal` from an interrupted run (one fewer left to do), or timed and kept now
        (timed=False: `fn` returns one already measured and counted, by `scan`)."""
        if key in journal:
            self.total -= 1
        return journal.value(key, lambda: self.timed(fn) if timed else fn())

    def scan(self, fn: Callable[[], Any], evaluations: int) -> Any:
        """`evaluations` evaluations measured together by `fn` (the layer scan)."""
        start = time.perf_counter()
        out = fn()
        self.done += evaluations
        self.seconds += time.perf_counter() - start
        return out

    def line(self, what: str, started: float) -> None:
        per = self.seconds / max(self.done, 1)
        left = per * max(self.total - self.done, 0)
        self.say(
            f"{what}: {time.perf_counter() - started:.1f} s ({per:.2f} s per evaluation; "
            f"{self.done}/{self.total} evaluations, about {_minutes(left)} left)"
        )


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def count_evaluations(s: GridSettings, n_layers: int) -> int:
    n = sum(len(s.grid) * (s.random_draws if score == "random" else 1) for _, score in s.pairs())
    if "layers" in s.units:
        n += n_layers  # each layer removed alone, on the test prompts
    if {"heads", "mlp_blocks"} <= set(s.units) and "gradient" in s.scores:
        n += len(s.grid)  # heads then FFN blocks
    if "weights" in s.units:  # the dense model again (with per-prompt losses), each score's curve and N:M points
        per_score = [s.random_draws if sc == "random" else 1 for sc in s.scores if s.applies("weights", sc)]
        n += 1 + sum(per_score) * (len(s.grid) + len(s.patterns))
    return n + 1  # dense


def run_grid(
    probe: Probe,
    test: Prompts,
    scoring: Prompts,
    layout: UnitLayout,
    weights: Mapping[str, torch.Tensor],
    s: GridSettings,
    seed: int,
    chance: float,
    layers: Sequence[torch.nn.Module] = (),
    say: Callable[[str], None] = lambda line: None,
    journal: Journal | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every curve of the grid, the layer-by-layer removals, the combined heads-then-FFN curve and the scores; and
    the timing (kept apart: a resumed study's results equal an uninterrupted one's, its timing cannot). Every
    measurement goes through `journal`, which keeps it on disk as it is made (lottery/structured/journal.py)."""
    journal = journal if journal is not None else memory()
    clock = Clock(count_evaluations(s, layout.grids["layers"][0] if "layers" in layout.grids else 0), say)
    if journal.resumed:
        say(f"resuming: {journal.resumed} measurements kept from an interrupted run ({journal.path})")
    started = time.perf_counter()
    dense = clock.kept(journal, "dense", lambda: probe.evaluate(test))
    dense_seconds = clock.seconds  # one evaluation of the test prompts: the unit the grid's cost is measured in
    iv = Intervals.of(test, dense, s, seed, probe.token_accuracy)
    dense["acc_ci"] = iv.ci(dense["hits"])
    ok = meaningful(dense["acc"], chance, s.min_above_chance)
    low, high = dense["acc_ci"]
    say(
        f"dense: accuracy {dense['acc']:.2%} [{low:.0%}, {high:.0%}] over {iv.resamples.clusters} held-out queries, "
        f"loss {dense['loss']:.4f} (chance {chance:.2%})"
    )
    scores, details, layer_removal = _scores(probe, scoring, test, layout, weights, s, layers, clock, iv, journal)
    clock.line("scores", started)
    none = {k: torch.zeros(layout.grids[k], dtype=torch.bool) for k in s.unit_kinds}
    curves: dict[str, dict[str, list]] = {k: {} for k in s.unit_kinds}
    for kind, score in s.pairs():
        started = time.perf_counter()
        points = _curve(probe.evaluate, clock, journal, test, layout, kind, score, scores, s, seed, none)
        curves[kind][score] = [iv.mark(p) for p in points]
        clock.line(f"{kind} by {score}", started)
    results: dict[str, Any] = {
        "dense": dense,
        "chance": chance,
        "meaningful": ok,
        "tolerance": s.tolerance,
        "confidence": s.confidence,
        "min_above_chance": s.min_above_chance,
        "held_out_queries": iv.resamples.clusters,
        "totals": {k: layout.size(k) for k in s.unit_kinds},
        "grids": {k: list(layout.grids[k]) for k in s.unit_kinds},
        "curves": curves,
        "removable": {k: {sc: _removable(c, s, ok) for sc, c in by.items()} for k, by in curves.items()},
        "removable_point": {
            k: {sc: _removable(c, s, ok, dense["acc"]) for sc, c in by.items()} for k, by in curves.items()
        },
        "scores": {name: {k: v.tolist() for k, v in by_kind.items()} for name, by_kind in scores.items()},
        "score_details": details,
    }
    if layer_removal is not None:
        results["layer_removal"] = layer_removal
    if "weights" in s.units:
        started = time.perf_counter()
        results = _with_weights(results, probe, test, scoring, s, seed, iv, clock, journal, ok)
        clock.line("weights", started)
    if {"heads", "mlp_blocks"} <= set(s.units) and "gradient" in s.scores:
        started = time.perf_counter()
        results["combined"] = _combined(probe, clock, journal, test, scoring, layout, s, scores, results, none, ok, iv)
        clock.line("heads then FFN blocks", started)
    timing = {
        "evaluations": clock.done,  # of the test prompts measured in this run (scoring passes are not counted)
        "evaluation_seconds": clock.seconds,
        "dense_evaluation_seconds": dense_seconds,  # 0 when the dense evaluation was kept from an interrupted run
        "grid_over_evaluations": clock.seconds / max(clock.done * dense_seconds, 1e-9) if dense_seconds else None,
        "resumed_measurements": journal.resumed,
    }
    return results, timing


def _with_weights(results, probe, test, scoring, s, seed, iv, clock, journal, ok) -> dict[str, Any]:
    """The weights kind (lottery/structured/weights.py): its curves beside the units', its N:M points, its totals."""
    from lottery.structured.weights import KIND, Pruned, weight_curves

    out = weight_curves(Pruned(probe.network), probe, test, scoring, s, s.patterns, seed, iv, clock, journal, draw_seed)
    results["curves"][KIND] = out["curves"]
    results["removable"][KIND] = {sc: _removable(c, s, ok) for sc, c in out["curves"].items()}
    results["removable_point"][KIND] = {
        sc: _removable(c, s, ok, results["dense"]["acc"]) for sc, c in out["curves"].items()
    }
    results["totals"][KIND] = out["about"]["weights"]
    results["weight_patterns"] = out["patterns"]
    results["weights"] = out["about"] | {"dense": out["dense"]}
    return results


def _removable(points: list[dict[str, Any]], s: GridSettings, ok: bool, dense_acc: float | None = None):
    """The claimed fraction: drop_bound within tolerance (or, given dense_acc, the point estimate within it)."""
    if not ok:
        return None
    if dense_acc is None:
        return removable([(p["fraction"], -p["drop_bound"]) for p in points], 0.0, s.tolerance)
    return removable([(p["fraction"], p["acc"]) for p in points], dense_acc, s.tolerance)


def _scores(probe, scoring, test, layout, weights, s, layers, clock, iv, journal) -> tuple[dict, dict, list | None]:
    kinds = s.unit_kinds
    out: dict[str, dict[str, torch.Tensor]] = {}
    details: dict[str, dict[str, list]] = {}

    def line(what: str, fn: Callable[[], Any]) -> Any:  # a line per score: scoring can take minutes on a CPU
        start = time.perf_counter()
        value = fn()
        clock.say(f"scored {what} on {len(scoring)} prompts: {time.perf_counter() - start:.1f} s")
        return value

    if "magnitude" in s.scores and any(k in APPLIES["magnitude"] for k in kinds):
        out["magnitude"] = magnitude_scores(weights, layout, [k for k in kinds if k in APPLIES["magnitude"]])
    if "gradient" in s.scores and kinds:
        grids = {k: layout.grids[k] for k in kinds}
        out["gradient"] = line(
            "gradient", lambda: journal.tensors("scores/gradient", lambda: probe.gradient_scores(scoring, grids))
        )
    if "token_gradient" in s.scores and "heads" in kinds:
        heads = line(
            "token_gradient (heads)",
            lambda: journal.tensor(
                "scores/token_gradient", lambda: probe.token_head_scores(scoring, layout.grids["heads"])
            ),
        )
        out["token_gradient"] = {"heads": heads}
    if "single" in s.scores:
        for kind in kinds:
            if s.applies(kind, "single"):
                knocked = line(
                    f"single ({layout.size(kind)} {kind} knocked out one at a time)",
                    lambda kind=kind: journal.tensors(
                        f"scores/single/{kind}", lambda: probe.knockout_scores(scoring, layout.grids[kind], kind)
                    ),
                )
                out.setdefault("single", {})[kind] = knocked["score"]
                details.setdefault("single", {})[kind] = {
                    "acc_drop": knocked["acc_drop"].tolist(),
                    "loss_rise": knocked["loss_rise"].tolist(),
                }
    layer_removal = None
    if "layers" in kinds:
        n = layout.grids["layers"][0]
        if len(layers) != n:
            raise ValueError(f"layer scores need the network's {n} decoder layers, got {len(layers)}")
        angular = journal.tensor("scores/angular", lambda: probe.angular_distances(scoring, layers))  # one pass
        out["angular"] = {"layers": angular}
        layer_removal = []
        # every layer removed alone, in one scan that starts each pass at the removed layer (Probe.layer_scan);
        # layers kept in the journal by an interrupted run are not measured again
        missing = [i for i in range(n) if f"layer/{i}" not in journal]
        scanned = clock.scan(lambda: probe.layer_scan(test, missing), len(missing)) if missing else {}
        for i in range(n):
            on_test = clock.kept(journal, f"layer/{i}", lambda i=i: scanned[i], timed=False)
            iv.mark(on_test)
            layer_removal.append(
                {
                    "layer": i,
                    "acc": on_test["acc"],
                    "acc_ci": on_test["acc_ci"],
                    "drop_bound": on_test["drop_bound"],
                    "loss": on_test["loss"],
                    "angular_distance": float(angular[i]),
                }
            )
    return out, details, layer_removal


def removals(layout: UnitLayout, kind: str, score: str, fraction: float, scores, s: GridSettings, seed: int):
    """The units of `kind` kept at `fraction` removed: one mask (True = kept) for a score, `random_draws` masks for
    random, each draw from its own fixed seed (the transfer study re-draws the grid's removals with this)."""
    alive = {kind: torch.ones(layout.grids[kind], dtype=torch.bool)}
    keep = keep_count(layout.size(kind), 1.0 - fraction)
    if score != "random":
        return [keep_top({kind: scores[score][kind]}, alive, {kind: keep})[kind]]
    draws = []
    for draw in range(s.random_draws):
        gen = torch.Generator().manual_seed(draw_seed(seed, kind, draw))
        draws.append(keep_top(random_scores(layout, (kind,), gen), alive, {kind: keep})[kind])
    return draws


def _curve(evaluate, clock, journal, test, layout, kind, score, scores, s, seed, none) -> list[dict[str, Any]]:
    n, points = layout.size(kind), []
    for fraction in s.grid:
        draws, masks = [], removals(layout, kind, score, fraction, scores, s, seed)
        for draw, kept in enumerate(masks):
            key = f"curve/{kind}/{score}/{fraction!r}" + (f"/{draw}" if score == "random" else "")
            draws.append(clock.kept(journal, key, lambda kept=kept: evaluate(test, {**none, kind: ~kept})))
        kept = masks[0]  # for random: the first draw's survivors are the ones shown
        point = mean_point(draws)
        point |= {"fraction": fraction, "removed": n - int(kept.sum()), "kept": kept.int().tolist()}
        points.append(point)
    return points


def _combined(probe, clock, journal, test, scoring, layout, s, scores, results, none, ok, iv) -> dict[str, Any]:
    """Heads first (at the largest fraction any score removes within tolerance), then FFN blocks on top."""
    head_fractions = results["removable"]["heads"]
    learned = {sc: f for sc, f in head_fractions.items() if sc != "random" and f}
    if not ok or not learned:
        return {"note": "no heads are removable within tolerance, so nothing is removed before the FFN blocks"}
    head_score = max(learned, key=lambda sc: (learned[sc], sc == "gradient"))
    fraction = learned[head_score]
    n = layout.size("heads")
    alive = {"heads": torch.ones(layout.grids["heads"], dtype=torch.bool)}
    heads_kept = keep_top({"heads": scores[head_score]["heads"]}, alive, {"heads": keep_count(n, 1.0 - fraction)})
    base = {**none, "heads": ~heads_kept["heads"]}
    grids = {"mlp_blocks": layout.grids["mlp_blocks"]}
    ffn = journal.tensors("combined/ffn_scores", lambda: probe.gradient_scores(scoring, grids, removed=base))
    ffn = ffn["mlp_blocks"]
    start = iv.mark(journal.value("combined/heads_only", lambda: probe.evaluate(test, base)))
    points, m = [], layout.size("mlp_blocks")
    block_alive = {"mlp_blocks": torch.ones(layout.grids["mlp_blocks"], dtype=torch.bool)}
    for f in s.grid:
        kept = keep_top({"mlp_blocks": ffn}, block_alive, {"mlp_blocks": keep_count(m, 1.0 - f)})
        removed = {**base, "mlp_blocks": ~kept["mlp_blocks"]}
        measured = clock.kept(journal, f"combined/{f!r}", lambda removed=removed: probe.evaluate(test, removed))
        point = mean_point([measured])
        points.append(iv.mark(point | {"fraction": f, "removed": m - keep_count(m, 1.0 - f)}))
    return {
        "heads_score": head_score,
        "heads_fraction": fraction,
        "heads_only": {k: start[k] for k in ("acc", "acc_ci", "drop_bound", "loss")},
        "ffn_score": "gradient (re-scored with those heads removed)",
        "curve": points,
        "removable_fraction": _removable(points, s, ok),
        "removable_fraction_point": _removable(points, s, ok, results["dense"]["acc"]),
        "ffn_scores": ffn.tolist(),
    }
