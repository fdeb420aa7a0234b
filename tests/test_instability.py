"""The instability analysis (linear mode connectivity): the interpolation path, the error barrier, and the
branch=instability runs that train a second copy and measure the barrier, including a kill and resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, seed_dir_of, tiny
from omegaconf import OmegaConf

from lottery.core.interpolation import alphas, error_barrier, interpolate

KILL_SCRIPT = Path(__file__).with_name("kill_run.py")
# Rewind to step 10 of 60; five interpolation points keep the test fast (the default is the paper's 30).
EXTRA = ("rewind=weights", "rewind.step=10it", "branch=instability", "instability.points=5")


def test_alphas_are_evenly_spaced_with_both_endpoints():
    a = alphas(30)
    assert len(a) == 30 and a[0] == 0.0 and a[-1] == 1.0
    assert all(abs((a[i + 1] - a[i]) - 1 / 29) < 1e-12 for i in range(29))
    with pytest.raises(ValueError, match="instability.points=1"):
        alphas(1)


def test_interpolation_reproduces_endpoints_bit_for_bit_and_keeps_pruned_weights_zero():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(50, 40, generator=g) > 0.7
    a = {"w": torch.randn(50, 40, generator=g) * mask, "n": torch.tensor(7)}
    b = {"w": torch.randn(50, 40, generator=g) * mask, "n": torch.tensor(9)}
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    mid = interpolate(a, b, 0.5)
    assert torch.allclose(mid["w"], (a["w"] + b["w"]) / 2)
    assert int(mid["n"]) == 7  # integer buffers are taken from the first network
    for alpha in alphas(30):
        assert not interpolate(a, b, alpha)["w"][~mask].any()
    with pytest.raises(ValueError, match="differ in their tensors"):
        interpolate(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate(a, {"w": torch.zeros(3), "n": b["n"]}, 0.5)


def test_error_barrier_is_the_peak_above_the_endpoints_mean():
    assert error_barrier([0.1] * 30) == 0.0  # a network with itself
    assert error_barrier([0.10, 0.30, 0.12]) == pytest.approx(0.30 - 0.11)
    assert error_barrier([0.10, 0.05, 0.12]) == pytest.approx(0.12 - 0.11)  # never negative: endpoints are on the path
    with pytest.raises(ValueError):
        error_barrier([0.1])


@pytest.fixture(scope="module")
def instability_run(tmp_path_factory):
    from lottery.cli import run_config

    root = tmp_path_factory.mktemp("instability")
    overrides = tiny(root, *EXTRA)
    run_config(compose_config(overrides))
    return root, overrides, seed_dir_of(overrides)


def test_instability_branch_writes_a_curve_whose_endpoints_are_the_two_copies(instability_run):
    _, _, seed_dir = instability_run
    rows = (seed_dir / "branch_instability" / "instability.csv").read_text().splitlines()
    assert rows[0] == "level,density,rewind_step,error_a,error_b,barrier,loss_barrier,stable"
    assert len(rows) == 1 + 3  # levels 0, 1, 2
    for level in range(3):
        analysis = seed_dir / "branch_instability" / f"level_{level}"
        record = json.loads((analysis / "instability.json").read_text())
        trunk = json.loads((seed_dir / f"level_{level}" / "metrics.json").read_text())
        copy_b = json.loads((analysis / "copy_b" / "metrics.json").read_text())
        assert record["alpha"] == alphas(5) and len(record["test_error"]) == 5
        # The endpoints are measured exactly as each network's own final test accuracy.
        assert record["error_a"] == 1.0 - trunk["test_acc"]
        assert record["error_b"] == 1.0 - copy_b["test_acc"]
        assert record["barrier"] == max(record["test_error"]) - (record["error_a"] + record["error_b"]) / 2
        assert record["stable"] == (record["barrier"] < 0.02)
        assert record["density"] == trunk["density"] == copy_b["density"]
        assert record["rewind_step"] == 10
        # The second copy has the trunk's mask and really is another network (another data order).
        mask = torch.load(seed_dir / f"level_{level}" / "mask.pt", weights_only=True)
        a = torch.load(seed_dir / f"level_{level}" / "weights.pt", weights_only=True)
        b = torch.load(seed_dir / "branch_instability" / f"level_{level}" / "copy_b" / "weights.pt", weights_only=True)
        for name, m in mask.items():
            assert not b[name][~m].any()
        assert any(not torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((seed_dir / "tickets.json").read_text())
    assert summary["branches"] == []  # the analysis is not a control line


def test_barrier_of_a_network_with_itself_is_zero(instability_run):
    from lottery.branches.instability import interpolation_curve
    from lottery.setup import prepare

    _, overrides, seed_dir = instability_run
    cfg = compose_config(overrides)
    setup = prepare(OmegaConf.to_object(cfg), OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.optim))
    state = torch.load(seed_dir / "level_1" / "weights.pt", weights_only=True)
    curve = interpolation_curve(setup, state, state, 7)
    assert len(set(curve["test_error"])) == 1
    assert error_barrier(curve["test_error"]) == 0.0


def test_copy_a_is_the_trunk_level_retrained_from_the_rewind_point_with_the_run_data_order(instability_run):
    """Why the trunk's own level serves as copy a: training from the rewind checkpoint with the run's data order
    gives the trunk's level 0 bit for bit (its first k steps are what the checkpoint holds)."""
    from lottery.core.layout import LevelPaths
    from lottery.setup import prepare
    from lottery.training.fit import LevelFit, Start, fit_level
    from lottery.training.tracking import Tracker

    root, overrides, seed_dir = instability_run
    cfg = compose_config(overrides)
    setup = prepare(OmegaConf.to_object(cfg), OmegaConf.to_container(cfg.model), OmegaConf.to_container(cfg.optim))
    dense = torch.load(seed_dir / "level_0" / "mask.pt", weights_only=True)
    lp = LevelPaths(root / "replay")
    tracker = Tracker(setup.cfg, setup.paths, {}, branch="replay")
    spec = LevelFit(lp, 0, dense, Start(checkpoint=setup.paths.rewind), data_seed=setup.cfg.seed)
    module = fit_level(setup, spec, tracker)
    trunk = torch.load(seed_dir / "level_0" / "weights.pt", weights_only=True)
    for k, v in module.network.state_dict().items():
        assert torch.equal(v, trunk[k]), k


def test_rerun_skips_and_new_points_recompute_without_training(instability_run):
    from lottery.cli import run_config

    _, overrides, seed_dir = instability_run
    record = seed_dir / "branch_instability" / "level_1" / "instability.json"
    copy_b = seed_dir / "branch_instability" / "level_1" / "copy_b" / "weights.pt"
    before = (record.stat().st_mtime_ns, copy_b.stat().st_mtime_ns)
    run_config(compose_config(overrides))
    assert (record.stat().st_mtime_ns, copy_b.stat().st_mtime_ns) == before
    run_config(compose_config([*overrides, "instability.points=9"]))
    assert copy_b.stat().st_mtime_ns == before[1]  # the copies are reused
    assert len(json.loads(record.read_text())["test_error"]) == 9
    run_config(compose_config(overrides))  # back to the module's 5 points, for the tests that compare with it
    assert len(json.loads(record.read_text())["test_error"]) == 5


def test_instability_levels_pick_the_analysed_levels(tmp_path, run_tiny):
    _, seed_dir = run_tiny(*EXTRA, "instability.levels=[2]")
    analysed = sorted(p.parent.name for p in (seed_dir / "branch_instability").glob("level_*/instability.json"))
    assert analysed == ["level_2"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("branch=instability", "rewind=lr"), "branch=instability needs rewind.mode=weights"),
        (("branch=instability", "instability.points=1"), "instability.points=1"),
        (("branch=instability", "instability.threshold=0"), "instability.threshold=0"),
        (("branch=instability", "instability.levels=[5]"), r"instability.levels=\[5\] asks for levels \[5\]"),
    ],
)
def test_bad_instability_settings_fail_before_training(tmp_path, overrides, message):
    from lottery.cli import run_config
    from lottery.validate import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_config(compose_config(tiny(tmp_path, *overrides)))
    assert not list(tmp_path.rglob("metrics.json"))


def test_instability_killed_in_the_second_copy_resumes_to_the_same_record(tmp_path, instability_run):
    from lottery.cli import run_config

    _, _, reference = instability_run
    overrides = tiny(tmp_path, *EXTRA)
    # Fits 1-3 are the trunk's levels, 4 and 5 the copies of levels 0 and 1: kill inside the copy of level 1.
    proc = subprocess.run(
        [sys.executable, str(KILL_SCRIPT), "fit:5", "0", "30", *overrides], capture_output=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    seed_dir = seed_dir_of(overrides)
    assert not (seed_dir / "branch_instability" / "level_1" / "instability.json").exists()
    run_config(compose_config(overrides))
    for level in range(3):
        got = json.loads((seed_dir / "branch_instability" / f"level_{level}" / "instability.json").read_text())
        want = json.loads((reference / "branch_instability" / f"level_{level}" / "instability.json").read_text())
        assert got == want, level
        w_got = torch.load(seed_dir / "branch_instability" / f"level_{level}" / "copy_b" / "weights.pt")
        w_want = torch.load(reference / "branch_instability" / f"level_{level}" / "copy_b" / "weights.pt")
        assert all(torch.equal(w_got[k], w_want[k]) for k in w_want)


def test_compare_plots_barrier_and_ticket_accuracy_against_the_rewind_point(tmp_path):
    from lottery.cli import run_config
    from lottery.reports.compare import main
    from lottery.reports.stability import earliest_stable

    records = {}
    for k in ("0it", "20it"):
        overrides = tiny(
            tmp_path, "rewind=weights", f"rewind.step={k}", "branch=instability", "levels=1", "instability.points=3"
        )
        run_config(compose_config(overrides))
        seed_dir = seed_dir_of(overrides)
        for level in (0, 1):
            record = json.loads((seed_dir / "branch_instability" / f"level_{level}" / "instability.json").read_text())
            acc = json.loads((seed_dir / f"level_{level}" / "metrics.json").read_text())["test_acc"]
            records[(level, int(k.removesuffix("it")))] = (record["barrier"], acc)
    assert main([str(tmp_path / "default"), "--out", str(tmp_path / "report")]) == 0
    csv_rows = (tmp_path / "report" / "instability_vs_rewind.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    got = {}
    for line in csv_rows[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        assert row["label"] == "default" and row["seeds"] == "1"
        got[(int(row["level"]), int(row["rewind_step"]))] = (float(row["barrier"]), float(row["ticket_test_acc"]))
    assert got == records  # the CSV holds the exact values (floats are written with repr)
    assert (tmp_path / "report" / "instability_vs_rewind.png").stat().st_size > 10_000

    rows = [
        {"label": "c", "level": 1, "rewind_step": k, "stable": stable}
        for k, stable in ((0, False), (100, False), (500, True), (2000, True))
    ] + [{"label": "c", "level": 2, "rewind_step": 0, "stable": False}]
    assert earliest_stable(rows) == {("c", 1): 500, ("c", 2): None}


def test_instability_of_a_transformer_with_structured_masks_scores_the_in_context_task(run_tiny):
    """The analysis works for every model of the project: a tiny transformer on in-context recall, heads pruned as
    whole units; the curve's endpoints are the copies' own in-context accuracies and removed heads stay zero."""
    from test_structured_run import ICL

    _, seed_dir = run_tiny(
        *ICL, "levels=1", "rewind=weights", "rewind.step=10it", "branch=instability", "instability.points=3"
    )
    for level in (0, 1):
        analysis = seed_dir / "branch_instability" / f"level_{level}"
        record = json.loads((analysis / "instability.json").read_text())
        trunk = json.loads((seed_dir / f"level_{level}" / "metrics.json").read_text())
        copy_b = json.loads((analysis / "copy_b" / "metrics.json").read_text())
        assert record["error_a"] == 1.0 - trunk["test_acc"] and record["error_b"] == 1.0 - copy_b["test_acc"]
    mask = torch.load(seed_dir / "level_1" / "mask.pt", weights_only=True)
    assert any(not m.all() for m in mask.values())  # level 1 really removed units
    b = torch.load(seed_dir / "branch_instability" / "level_1" / "copy_b" / "weights.pt", weights_only=True)
    assert all(not b[k][~m].any() for k, m in mask.items())
