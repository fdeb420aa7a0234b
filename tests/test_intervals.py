"""Intervals over held-out queries (lottery/core/intervals.py): the bootstrap resamples queries, not prompts, so asking
each query more often does not narrow an interval; a drop from dense is bounded on the same resamples (paired); a
pretrained study writes an interval beside every accuracy and claims a fraction removable only within tolerance at
the stated confidence."""

from __future__ import annotations

import json

import pytest
import torch

from lottery.core.intervals import Resamples, mean_and_spread

# 16 held-out queries, 10 answered right by the dense model
QUERY_HITS = [1.0] * 10 + [0.0] * 6


def prompts_of(copies: int) -> tuple[list[int], list[float]]:
    """Each query asked `copies` times (its prompts succeed or fail together, as prompts of one answer do)."""
    groups = [q for q in range(16) for _ in range(copies)]
    return groups, [QUERY_HITS[q] for q in groups]


def test_asking_each_query_more_often_does_not_narrow_the_interval():
    widths = {}
    for copies in (1, 3, 10):
        groups, hits = prompts_of(copies)
        low, high = Resamples.of(groups, 4000, seed=0).interval(hits)
        widths[copies] = high - low
        assert low < 10 / 16 < high
    assert max(widths.values()) - min(widths.values()) < 0.03  # about the same at 16, 48 and 160 prompts
    # treating 160 prompts as independent trials would claim an interval about sqrt(10) times narrower
    groups, hits = prompts_of(10)
    low, high = Resamples.of(list(range(160)), 4000, seed=0).interval(hits)
    assert high - low < widths[10] / 2


def test_intervals_are_a_function_of_the_seed_and_read_token_counts():
    groups, hits = prompts_of(3)
    a, b = Resamples.of(groups, 500, seed=7), Resamples.of(groups, 500, seed=7)
    assert a.interval(hits) == b.interval(hits)
    assert torch.equal(a.counts, b.counts) and not torch.equal(Resamples.of(groups, 500, seed=8).counts, a.counts)
    # token accuracy: correct tokens over tokens, per resample
    acc = Resamples.of([0, 1], 200, seed=0).accuracies([3.0, 0.0], [4, 4])
    assert set(acc.tolist()) <= {0.0, 3 / 8, 3 / 4}
    with pytest.raises(ValueError, match="hits or"):
        a.accuracies(hits[:-1])


def test_a_drop_is_bounded_on_the_same_resamples():
    groups, dense = prompts_of(3)
    same = Resamples.of(groups, 2000, seed=0)
    assert same.drop_bound(dense, dense) == 0.0
    # the pruned model loses one of the 16 queries: every resample's drop is 0 or a positive number of that query's
    # share, never negative, so the bound is at least 1/16 only when that query is often drawn
    lost = list(dense)
    for i, g in enumerate(groups):
        if g == 0:
            lost[i] = 0.0
    bound = same.drop_bound(dense, lost, confidence=0.95)
    assert 1 / 16 <= bound <= 3 / 16
    # unpaired, the two intervals overlap almost entirely: pairing is what makes a small drop visible
    low_dense, _ = same.interval(dense)
    low_lost, high_lost = same.interval(lost)
    high_dense = same.interval(dense)[1]
    assert high_lost > low_dense
    assert bound < high_dense - low_lost  # the unpaired worst case would allow a far larger drop


def test_mean_and_spread_over_splits():
    out = mean_and_spread([0.5, 0.7, 0.6])
    assert out["mean"] == pytest.approx(0.6) and out["sd"] == pytest.approx(0.1) and out["n"] == 3
    assert (out["min"], out["max"]) == (0.5, 0.7)
    assert mean_and_spread([0.4])["sd"] == 0.0


class QueryProbe:
    """Every removed unit costs the dense model query 0, then query 1, ...: the point estimate drops by 1/8 per
    unit, while a bootstrap over 8 queries cannot rule out a larger drop."""

    token_accuracy = False

    def __init__(self, prompts_per_query: int = 5) -> None:
        self.k = prompts_per_query

    def evaluate(self, prompts, removed=None):
        gone = sum(int(r.sum()) for r in (removed or {}).values())
        hits = [0.0 if q < gone else 1.0 for q in prompts.queries.tolist()]
        return {"acc": sum(hits) / len(hits), "loss": 1.0 + gone, "by_context": None, "hits": hits, "tokens": None}

    def gradient_scores(self, prompts, grids, removed=None):
        return {k: torch.arange(torch.Size(g).numel(), dtype=torch.float64).reshape(g) for k, g in grids.items()}


def test_the_claim_needs_the_drop_within_tolerance_at_the_stated_confidence():
    from lottery.core.units import UnitLayout
    from lottery.structured.grid import GridSettings, run_grid
    from lottery.structured.probe import Prompts

    queries = [q for q in range(8) for _ in range(5)]
    prompts = Prompts(
        torch.zeros(40, 3, dtype=torch.int64), torch.zeros(40, 3, dtype=torch.int64), None, torch.tensor(queries)
    )
    layout = UnitLayout(grids={"heads": (8,)}, slices={"heads": ((),) * 8})
    s = GridSettings(
        grid=(0.125, 0.25), units=("heads",), scores=("gradient",), random_draws=1, tolerance=0.15,
        min_above_chance=0.1, confidence=0.95, bootstrap=2000,
    )  # fmt: skip
    results, _ = run_grid(QueryProbe(), prompts, prompts, layout, {}, s, 0, chance=0.0)
    assert results["dense"]["acc_ci"] == [1.0, 1.0] and results["held_out_queries"] == 8
    points = results["curves"]["heads"]["gradient"]
    assert [p["acc"] for p in points] == [7 / 8, 6 / 8]
    for p in points:
        low, high = p["acc_ci"]
        assert low <= p["acc"] <= high and low < high
    # the point estimates are within 0.15 at 1/8 (drop 0.125); the drop's 95% bound is not (1 of 8 queries lost
    # can be 2 of 8 in a resample)
    assert results["removable_point"]["heads"]["gradient"] == 0.125
    assert points[0]["drop_bound"] > 0.15 and results["removable"]["heads"]["gradient"] == 0.0


def test_a_pretrained_study_writes_an_interval_beside_every_accuracy(run_tiny, tmp_path):
    pytest.importorskip("transformers")
    from hf_models import save_model
    from test_pretrained import GRID, RECALL

    folder = save_model(tmp_path / "llama", "llama", kv_heads=2)
    _, seed_dir = run_tiny(
        "model=hf",
        f"model.path={folder}",
        *RECALL,
        *GRID,
        "structured.grid_scores=[gradient,token_gradient,single,random]",
    )
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    accs = [results["dense"], *results["layer_removal"]]
    accs += [p for by in results["curves"].values() for points in by.values() for p in points]
    for point in accs:
        low, high = point["acc_ci"]
        assert 0.0 <= low <= point["acc"] <= high <= 1.0
    assert set(results["curves"]["heads"]) == {"gradient", "token_gradient", "random"}
    assert set(results["curves"]["mlp_blocks"]) == {"gradient", "single", "random"}
    assert set(results["score_details"]["single"]) == {"mlp_blocks", "layers"}
    assert results["settings"]["confidence"] == 0.95 and results["held_out_queries"] == 40  # recall: prompts
    report = json.loads((seed_dir / "structured.json").read_text())
    assert report["dense"]["test_acc_ci"] == results["dense"]["acc_ci"]
