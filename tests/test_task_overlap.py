"""Cross-task overlap of unit scores (lottery/reports/task_overlap.py): rank correlation, top-k Jaccard against its
exact random baseline, and lottery-compare over a folder of no_retrain results that differ in task and shots."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lottery.reports.compare import main
from lottery.reports.task_overlap import expected_random_jaccard, find_runs, spearman, top_count, top_k

LAYERS, HEADS = 4, 5


def test_spearman_of_identical_scores_is_one_and_of_reversed_scores_minus_one():
    x = torch.randn(LAYERS, HEADS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert spearman(x, x.clone()) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)


def test_the_random_jaccard_baseline_is_exact():
    assert expected_random_jaccard(20, 20, 20) == 1.0  # k = n: both sets are everything
    assert expected_random_jaccard(10, 0, 0) == 1.0
    assert expected_random_jaccard(10, 1, 1) == pytest.approx(1 / 10)  # the same unit with probability 1/n
    gen = torch.Generator().manual_seed(0)
    n, k, draws = 40, 8, 20000
    a = torch.rand(draws, n, generator=gen).argsort(1)[:, :k]
    b = torch.rand(draws, n, generator=gen).argsort(1)[:, :k]
    both = (torch.zeros(draws, n).scatter_(1, a, 1) * torch.zeros(draws, n).scatter_(1, b, 1)).sum(1)
    monte_carlo = float((both / (2 * k - both)).mean())
    assert expected_random_jaccard(n, k, k) == pytest.approx(monte_carlo, abs=0.005)


def test_top_k_keeps_the_highest_scores_and_ties_keep_the_earlier_unit():
    assert top_k(torch.tensor([[0.1, 0.9], [0.5, 0.2]]), 2).tolist() == [False, True, True, False]
    assert top_k(torch.ones(4), 2).tolist() == [True, True, False, False]
    assert [top_count(20, f) for f in (0.1, 0.2, 0.3)] == [2, 4, 6]
    assert top_count(3, 0.1) == 1  # at least one unit


def write_run(root, name, digest, data, heads, layers):
    """A structured run's seed folder as no_retrain writes it: results.json with data and scores, config.yaml."""
    seed_dir = root / name / digest / "seed_0"
    (seed_dir / "no_retrain").mkdir(parents=True)
    results = {
        "settings": {"grid": [0.5], "units": ["heads"], "scores": ["gradient", "magnitude"]},
        "data": {"name": "icl_text", **data},
        "scores": {
            "gradient": {"heads": heads.tolist(), "layers": layers.tolist()},
            "magnitude": {"heads": torch.ones(LAYERS, HEADS).tolist()},  # constant: Spearman undefined
        },
    }
    (seed_dir / "no_retrain" / "results.json").write_text(json.dumps(results))
    config = {"name": name, "seed": 0, "model": {"path": "tiny"}, "data": {"name": "icl_text", "data_seed": 1234}}
    (seed_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return seed_dir


def test_compare_writes_the_task_overlap_of_three_runs(tmp_path, capsys):
    base = torch.arange(LAYERS * HEADS, dtype=torch.float64).reshape(LAYERS, HEADS)  # unit 19 best, 0 worst
    other = base.clone()
    other.view(-1)[[16, 17]] = other.view(-1)[[17, 16]]  # a swap inside the top 4: the same top-k sets
    other.view(-1)[[15, 14]] = other.view(-1)[[14, 15]]
    third = base.clone()
    third.view(-1)[18] = -1.0  # unit 18 drops to the bottom
    layers = torch.tensor([1.0, 2.0, 3.0, 4.0])
    write_run(tmp_path, "tasks", "aaa", {"task": "capitals", "shots": [4]}, base, layers)
    write_run(tmp_path, "tasks", "bbb", {"task": "antonyms", "shots": [4]}, other, layers)
    write_run(tmp_path, "tasks", "ccc", {"task": "capitals", "shots": [0]}, third, -layers)

    runs = find_runs([tmp_path])
    assert sorted(r.label for r in runs) == ["task=antonyms, shots=[4]", "task=capitals, shots=[0]",
                                             "task=capitals, shots=[4]"]  # fmt: skip
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert "unit scores across runs" in capsys.readouterr().out
    result = json.loads((tmp_path / "report" / "task_overlap.json").read_text())
    assert (tmp_path / "report" / "task_overlap.md").read_text().startswith("# Cross-task overlap")
    assert result["varying"] == ["task", "shots"] and result["fractions"] == [0.1, 0.2, 0.3]
    assert [r["path"] for r in result["runs"]] == ["tasks/aaa/seed_0", "tasks/bbb/seed_0", "tasks/ccc/seed_0"]

    pairs = {(p["a"], p["b"], p["score"], p["kind"]): p for p in result["pairs"]}
    a, b, c = "task=capitals, shots=[4]", "task=antonyms, shots=[4]", "task=capitals, shots=[0]"
    assert set(pairs) == {
        (x, y, score, kind)
        for x, y in ((a, b), (a, c), (b, c))
        for score, kind in (("gradient", "heads"), ("gradient", "layers"), ("magnitude", "heads"))
    }
    ab = pairs[(a, b, "gradient", "heads")]
    assert ab["units"] == 20 and ab["spearman"] == pytest.approx(1 - 6 * 4 / (20 * (400 - 1)))
    assert [(t["fraction"], t["k"], t["jaccard"]) for t in ab["top"]] == [(0.1, 2, 1.0), (0.2, 4, 1.0), (0.3, 6, 1.0)]
    assert ab["top"][0]["random"] == pytest.approx(expected_random_jaccard(20, 2, 2))
    ac = pairs[(a, c, "gradient", "heads")]
    assert ac["top"][0]["jaccard"] == pytest.approx(1 / 3)  # {19, 18} against {19, 17}
    assert pairs[(a, c, "gradient", "layers")]["spearman"] == pytest.approx(-1.0)
    tied = pairs[(a, b, "magnitude", "heads")]  # constant scores: no ranking to compare (strict JSON, no NaN)
    assert tied["spearman"] is None and {t["jaccard"] for t in tied["top"]} == {None}

    summary = {(s["score"], s["kind"]): s for s in result["summary"]}
    heads = summary[("gradient", "heads")]
    assert (heads["runs"], heads["pairs"], heads["shape"]) == (3, 3, [LAYERS, HEADS])
    top10, top20 = heads["top"][0], heads["top"][1]
    assert top10["core"] == [[3, 4]] and top10["core_size"] == 1  # unit 19 = layer 3, head 4: best everywhere
    assert top20["core"] == [[3, 1], [3, 2], [3, 4]]  # units 16, 17 and 19: the third run lost 18
    assert top10["mean_jaccard"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)
    assert top10["random_core_size"] == pytest.approx(20 * 0.1**3)
    assert summary[("gradient", "layers")]["top"][0]["core"] == []  # the third run ranks layers in reverse
    assert summary[("magnitude", "heads")]["mean_spearman"] is None
    assert {(t["mean_jaccard"], t["core_size"]) for t in summary[("magnitude", "heads")]["top"]} == {(None, None)}


def test_compare_without_two_scored_runs_writes_no_task_overlap(tmp_path):
    write_run(tmp_path, "tasks", "aaa", {"task": "capitals"}, torch.rand(LAYERS, HEADS), torch.rand(LAYERS))
    assert main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0  # one pretrained study: nothing to pair
    assert not (tmp_path / "report" / "task_overlap.json").exists()
