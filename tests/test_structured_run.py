"""Structured pruning end to end on tiny transformers: the no-retrain grid (procedure a), structured IMP with rewinding
and its unit-level controls (procedure b), the per-run report, and lottery-compare on these runs."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import TINY_RECALL

from lottery.core import masks as M
from lottery.core.pruning import keep_count
from lottery.core.units import contract, expand, keep_top
from lottery.models import Transformer

# A 2-layer, 4-head transformer (8 heads, 2 MLP blocks, 16 MLP units) on 6-pair recall prompts: seconds per run.
ICL = [
    "model=transformer",
    *TINY_RECALL,
    "model.d_model=8",
    "model.n_heads=4",
    "model.d_mlp=8",
    "pruning.strategy=structured",
    "pruning.fraction=0.5",
    "structured.grid=[0.25,0.5,0.75]",
    "structured.random_draws=2",
    "structured.score_examples=64",
]


def load(path):
    return torch.load(path, weights_only=True)


def network_with(seed_dir, level_dir):
    config = yaml.safe_load((seed_dir / "config.yaml").read_text())
    model = {k: v for k, v in config["model"].items() if k not in ("name", "_target_")}
    network = Transformer((11,), 3 + 3 * 3, **model)  # 3 keys and their 9 pair tokens
    network.load_state_dict(load(level_dir / "weights.pt"))
    return network.eval()


def test_no_retrain_grid_runs_end_to_end_and_its_points_are_reproducible(run_tiny):
    from lottery.structured.rebuild import run_config, splits_of

    rows, seed_dir = run_tiny(*ICL, "structured.procedure=no_retrain")
    assert [r["level"] for r in rows] == [0]  # no_retrain trains the dense level 0 only
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    dense_metrics = json.loads((seed_dir / "level_0" / "metrics.json").read_text())
    assert results["dense"]["acc"] == dense_metrics["test_acc"]  # the same evaluation as the trained level's
    assert results["totals"] == {"heads": 8, "mlp_blocks": 2, "mlp_units": 16}
    for kind, n in results["totals"].items():
        for score in ("magnitude", "gradient", "random"):
            curve = results["curves"][kind][score]
            assert [p["fraction"] for p in curve] == [0.25, 0.5, 0.75]
            for p in curve:
                assert p["removed"] == n - keep_count(n, 1 - p["fraction"])
                assert n - int(torch.tensor(p["kept"]).sum()) == p["removed"]
    # a point of the curve is what removing those heads from the trained network gives, and they are the top ones
    magnitude = torch.tensor(results["scores"]["magnitude"]["heads"])
    point = results["curves"]["heads"]["magnitude"][1]
    alive = {"heads": torch.ones(2, 4, dtype=torch.bool)}
    expected = keep_top({"heads": magnitude}, alive, {"heads": 4})["heads"]
    assert torch.equal(torch.tensor(point["kept"], dtype=torch.bool), expected)
    network = network_with(seed_dir, seed_dir / "level_0")
    shapes = {n: tuple(w.shape) for n, w in M.prunable_weights(network).items()}
    M.apply_(M.prunable_weights(network), expand({"heads": expected}, network.layout(), shapes))
    splits = splits_of(run_config(seed_dir))
    with torch.no_grad():
        acc, _ = splits.task.metrics(network(splits.x_test), splits.y_test)
    assert acc == point["acc"]
    report = json.loads((seed_dir / "structured.json").read_text())
    for kind in results["totals"]:
        for score in ("magnitude", "gradient", "random"):
            assert report["no_retrain"][kind][score]["removable_fraction"] in (0.0, 0.25, 0.5, 0.75)
    assert report["chance"] == pytest.approx(1 / 3) and "imp" not in report
    for figure in ("heads_curve.png", "heads_survival.png", "icl_by_context.png"):
        assert (seed_dir / figure).stat().st_size > 0


def test_structured_imp_removes_whole_heads_per_level_and_the_random_control_matches_the_counts(run_tiny):
    rows, seed_dir = run_tiny(
        *ICL, "structured.procedure=imp", "rewind=weights", "rewind.step=20it", "branch=random_prune"
    )
    assert [r["level"] for r in rows] == [0, 1, 2]
    network = network_with(seed_dir, seed_dir / "level_0")
    layout = network.layout()
    previous = torch.ones(2, 4, dtype=torch.bool)
    for level in (1, 2):
        mask = load(seed_dir / f"level_{level}" / "mask.pt")
        units = contract(mask, layout)
        assert int(units["heads"].sum()) == keep_count(8, 0.5**level)  # 50% of the remaining heads per level
        assert bool(units["mlp_blocks"].all()) and bool(units["mlp_units"].all())  # only heads were asked for
        assert not bool((units["heads"] & ~previous).any())  # heads never come back
        previous = units["heads"]
        assert all(
            torch.equal(mask[n], m) for n, m in expand(units, layout, {n: m.shape for n, m in mask.items()}).items()
        )
        weights = load(seed_dir / f"level_{level}" / "weights.pt")
        for name, m in mask.items():
            assert torch.count_nonzero(weights[name][~m]) == 0  # removed heads stay exactly zero through training
        metrics = json.loads((seed_dir / f"level_{level}" / "metrics.json").read_text())
        sparsity = json.loads((seed_dir / f"level_{level}" / "sparsity.json").read_text())
        assert metrics["target_density"] == 0.5**level and sparsity["units"]["heads"]["remaining"] == 8 // 2**level
        control = contract(load(seed_dir / "branch_random_prune" / f"level_{level}" / "mask.pt"), layout)
        assert int(control["heads"].sum()) == int(units["heads"].sum())
    report = json.loads((seed_dir / "structured.json").read_text())
    imp = report["imp"]
    assert [r["removed"]["heads"] for r in imp["trunk"]["levels"]] == [0.0, 0.5, 0.75]
    assert [r["removed"]["heads"] for r in imp["branches"]["random_prune"]["levels"]] == [0.5, 0.75]
    assert imp["trunk"]["removable"]["heads"] in (0.0, 0.5, 0.75)
    for entry, heads in zip(imp["compact"], (8, 4, 2), strict=True):
        assert sum(entry["heads_per_layer"]) == heads and entry["max_abs_output_difference"] < 1e-5
        head, norm = 4 * 2 * 8, 2 * 8  # q, k, v rows and o columns of a head of size 2; a layer norm of width 8
        dropped = (8 - heads) * head + norm * entry["heads_per_layer"].count(0)  # a layer without heads: no ln1
        assert entry["parameters_compact"] == entry["parameters_masked"] - dropped
    assert not (seed_dir / "no_retrain").exists()  # procedure=imp skips the grid


def test_the_export_command_writes_a_compact_model_that_reproduces_the_level(run_tiny, capsys):
    from lottery.structured.export import main
    from lottery.structured.rebuild import run_config, splits_of

    _, seed_dir = run_tiny(*ICL, "structured.procedure=imp", "levels=2")
    assert main([str(seed_dir / "level_2")]) == 0
    saved = torch.load(seed_dir / "level_2" / "compact.pt", weights_only=True)
    assert sum(saved["config"]["heads_per_layer"]) == 2 and "max_abs_output_difference" in capsys.readouterr().out
    compact = Transformer(**saved["config"])
    compact.load_state_dict(saved["state_dict"])
    x = splits_of(run_config(seed_dir)).x_test
    with torch.no_grad():
        assert torch.allclose(compact.eval()(x), network_with(seed_dir, seed_dir / "level_2")(x), atol=1e-5)


def test_gradient_scored_imp_shares_level_0_and_oneshot_equals_the_trunk_at_level_1(run_tiny, tmp_path):
    from lottery.structured.probe import Probe, Prompts
    from lottery.structured.rebuild import run_config, splits_of

    run_tiny(*ICL, "structured.procedure=imp", "levels=1")
    rows, seed_dir = run_tiny(
        *ICL, "structured.procedure=imp", "structured.score=gradient", "levels=1", "branch=oneshot"
    )
    assert "reused_from" in rows[0]  # level 0 does not depend on the score: trained once
    trunk = load(seed_dir / "level_1" / "mask.pt")
    oneshot = load(seed_dir / "branch_oneshot" / "level_1" / "mask.pt")
    assert all(torch.equal(trunk[n], oneshot[n]) for n in trunk)  # both rank the dense trained heads once
    network = network_with(seed_dir, seed_dir / "level_0")
    splits = splits_of(run_config(seed_dir))
    # the prompts the score averages over: the first 64 of the training split after the validation carve
    order = torch.randperm(400, generator=torch.Generator().manual_seed(0))[60:]
    x, y = splits.x_train[order][:64], splits.y_train[order][:64]
    probe = Probe(network, splits.task, torch.device("cpu"), 256)
    scores = probe.gradient_scores(Prompts.of(splits.task, x, y), {"heads": network.layout().grids["heads"]})
    expected = keep_top(scores, {"heads": torch.ones(2, 4, dtype=torch.bool)}, {"heads": 4})["heads"]
    assert torch.equal(contract(trunk, network.layout())["heads"], expected)


def test_regression_prompts_run_the_no_retrain_grid(run_tiny):
    rows, seed_dir = run_tiny(
        *[o for o in ICL if not o.startswith("data.n_")],
        "data=icl_regression",
        "data.n_dims=2",
        "data.n_points=5",
        "structured.procedure=no_retrain",
        "structured.grid_units=[heads]",
        "structured.grid_scores=[gradient,random]",
    )
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert set(results["curves"]) == {"heads"} and set(results["curves"]["heads"]) == {"gradient", "random"}
    assert 0.0 < results["chance"] < 1.0 and 0.0 <= results["dense"]["acc"] <= 1.0
    assert results["dense"]["by_context"]["examples"] == [0, 1, 2, 3, 4]


def test_lottery_compare_reports_head_overlap_and_rank_correlations_across_seeds_and_tasks(run_tiny, tmp_path):
    from lottery.reports.compare import main

    for seed in (0, 1):
        _, seed_dir = run_tiny(*ICL, "structured.procedure=no_retrain", f"seed={seed}")
    run_tiny(*ICL, "structured.procedure=no_retrain", "data.n_values=4")  # another task, the same 2 x 4 heads
    assert main([str(seed_dir.parent.parent.parent), "--out", str(tmp_path / "report")]) == 0
    import csv

    read = lambda name: list(csv.DictReader((tmp_path / "report" / name).read_text().splitlines()))  # noqa: E731
    overlap, spearman = read("head_overlap.csv"), read("head_spearman.csv")
    assert {r["point"] for r in overlap} >= {"no_retrain/gradient/0.5", "no_retrain/magnitude/0.75"}
    assert all(0.0 <= float(r["jaccard"]) <= 1.0 for r in overlap)
    pairs = {(r["across"], r["score"]) for r in spearman}
    assert pairs == {(a, s) for a in ("seeds", "experiments") for s in ("gradient", "magnitude")}
    assert all(-1.0 <= float(r["spearman"]) <= 1.0 for r in spearman)
    across_tasks = [r for r in spearman if r["across"] == "experiments"]
    assert all(r["a"].endswith("seed_0") and r["b"].endswith("seed_0") for r in across_tasks)
    assert (tmp_path / "report" / "heads_removed.png").stat().st_size > 0
