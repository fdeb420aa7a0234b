"""Sparsity schedules: each preset's per-level targets follow its formula exactly; bad schedules are refused early;
schedules sweep with Hydra; levels shared by two schedules are trained once."""

from __future__ import annotations

import json
import math

import pytest
from conftest import compose_config, tiny
from omegaconf import OmegaConf

from lottery.core.pruning import PruningConfigError, PruningPlan, keep_count
from lottery.core.schedule import DEFAULT_LEVELS, SparsitySchedule
from lottery.validate import sparsity_schedule

NAMES = ["fc1.weight", "fc2.weight", "fc3.weight"]


def schedule_of(preset: str, *overrides: str) -> SparsitySchedule:
    return sparsity_schedule(OmegaConf.to_object(compose_config([f"pruning={preset}", *overrides])))


def test_fraction_presets_follow_one_minus_f_to_the_level():
    for preset, f in (("global_20", 0.2), ("global_10", 0.1), ("layerwise_20", 0.2)):
        s = schedule_of(preset)
        assert s.length is None and s.resolve_levels(None) == DEFAULT_LEVELS
        assert [s.density(level) for level in range(6)] == [1.0] + [(1 - f) ** level for level in range(1, 6)]


def test_lth_layerwise_gives_the_output_layer_half_rate():
    s = schedule_of("lth_layerwise")
    plan = PruningPlan.build(NAMES, "layerwise", 0.2, {"fc3": 0.1}, schedule=s)
    for level in range(1, 19):
        assert plan.layer_density("fc1.weight", level) == 0.8**level
        assert plan.layer_density("fc3.weight", level) == 0.9**level


def test_densities_list_is_read_level_by_level_and_sets_the_number_of_levels():
    s = schedule_of("target_list")
    assert s.resolve_levels(None) == 5
    assert [s.density(level) for level in range(6)] == [1.0, 0.8, 0.5, 0.2, 0.1, 0.05]


def test_geometric_reaches_its_target_in_n_levels():
    s = schedule_of("geometric_to_1pct")
    f = 1 - 0.01 ** (1 / 20)
    assert s.per_level_fraction == f
    assert s.resolve_levels(None) == 20
    assert [s.density(level) for level in range(21)] == [1.0] + [(1 - f) ** level for level in range(1, 21)]
    assert s.density(20) == pytest.approx(0.01, rel=1e-12)
    ten = schedule_of("geometric_to_1pct", "pruning.over_levels=10")
    assert ten.resolve_levels(None) == 10 and ten.density(10) == pytest.approx(0.01, rel=1e-12)


def test_oneshot_is_one_level_straight_to_the_target():
    s = schedule_of("oneshot_10pct")
    assert s.resolve_levels(None) == 1 and s.density(1) == 0.1
    plan = PruningPlan.build(NAMES, "global", schedule=s)
    assert plan.keep_counts({"fc1.weight": 4000, "fc2.weight": 10000, "fc3.weight": 1000}, 1) == {"*": 1500}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["pruning=target_list", "pruning.densities=[0.8,0.9,0.2]"], "strictly decreasing"),
        (["pruning=target_list", "pruning.densities=[0.8,0.8]"], "strictly decreasing"),
        (["pruning=target_list", "pruning.densities=[1.5]"], "pruning.densities[0]=1.5"),
        (["pruning=target_list", "pruning.densities=[]"], "needs pruning.densities"),
        (["pruning=target_list", "levels=7"], "levels=7 disagrees with pruning.schedule=densities"),
        (["pruning=oneshot_10pct", "levels=2"], "levels=2 disagrees"),
        (["pruning=geometric_to_1pct", "pruning.over_levels=0"], "pruning.over_levels=0"),
        (["pruning=geometric_to_1pct", "pruning.target_density=0"], "pruning.target_density=0"),
        (["pruning=global_20", "pruning.densities=[0.5]"], "only read by pruning.schedule=densities"),
        (["pruning=global_20", "pruning.schedule=cubic"], "pruning.schedule='cubic'"),
        (
            [
                "pruning=lth_layerwise",
                "pruning.schedule=geometric",
                "pruning.target_density=0.1",
                "pruning.over_levels=3",
            ],
            "read by pruning.schedule=fraction only",
        ),
    ],
)
def test_bad_schedules_are_refused_before_training(tmp_path, overrides, message):
    from lottery.cli import run_config

    with pytest.raises(PruningConfigError) as info:
        run_config(
            compose_config(
                tiny(tmp_path, *overrides, "levels=null")
                if "levels=" not in str(overrides)
                else tiny(tmp_path, *overrides)
            )
        )
    assert message in str(info.value)
    assert not list(tmp_path.rglob("level_*"))


@pytest.mark.parametrize("pattern", ["fc9", "conv*", "fc3.bias"])
def test_a_rate_pattern_that_matches_no_layer_is_refused(pattern):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(NAMES, "layerwise", 0.2, {pattern: 0.1})
    assert f"pruning.overrides names ['{pattern}'], which match no prunable layer" in str(info.value)


def test_rate_patterns_match_layer_or_parameter_names():
    plan = PruningPlan.build(NAMES, "layerwise", 0.2, {"fc3.*": 0.1, "fc1": 0.3})
    assert plan.rates == {"fc1.weight": 0.3, "fc2.weight": 0.2, "fc3.weight": 0.1}


def test_a_run_records_target_and_reached_density_per_layer_and_in_total(run_tiny):
    rows, seed_dir = run_tiny("pruning=lth_layerwise", "levels=2")
    sparsity = json.loads((seed_dir / "level_2" / "sparsity.json").read_text())
    for name, size, rate in (("fc1.weight", 4000, 0.2), ("fc2.weight", 10000, 0.2), ("fc3.weight", 1000, 0.1)):
        layer = sparsity["layers"][name]
        assert layer["target_density"] == (1 - rate) ** 2
        assert layer["remaining"] == keep_count(size, (1 - rate) ** 2)
        assert layer["density"] == layer["remaining"] / size
    assert sparsity["target_density"] == pytest.approx((14000 * 0.64 + 1000 * 0.81) / 15000, rel=1e-12)
    assert rows[2]["target_density"] == sparsity["target_density"] and rows[2]["density"] == sparsity["density"]


def test_a_densities_run_ends_at_the_list_length(run_tiny):
    rows, seed_dir = run_tiny("pruning=target_list", "pruning.densities=[0.5,0.25]", "levels=null")
    assert [r["level"] for r in rows] == [0, 1, 2]
    assert [r["remaining_weights"] for r in rows] == [15000, 7500, keep_count(15000, 0.25)]


def test_schedule_by_width_multirun_lands_four_experiments_and_trains_shared_levels_once(tmp_path):
    """2 schedules x 2 widths: four hash folders. global_20 and a densities list [0.8, 0.64] keep exactly the same
    weights at levels 1 and 2, so the second schedule reuses every level of the first at the same width."""
    import lottery.training.fit as fit
    from lottery.cli import run_config

    trained = []
    fit_stack = fit.fit_stack

    def counting(setups, specs, trackers):
        trained.extend((setup.paths.hash, spec.level) for setup, spec in zip(setups, specs, strict=True))
        return fit_stack(setups, specs, trackers)

    fit.fit_stack = counting
    try:
        jobs = [
            (schedule, width)
            for schedule in (["pruning=global_20", "levels=2"], ["pruning=target_list", "pruning.densities=[0.8,0.64]"])
            for width in ("model.width=0.5", "model.width=1")
        ]
        for schedule, width in jobs:
            run_config(compose_config(tiny(tmp_path, *schedule, width)))
    finally:
        fit.fit_stack = fit_stack
    experiments = sorted((tmp_path / "default").iterdir())
    assert len(experiments) == 4
    assert len(trained) == 2 * 3  # each width trains levels 0-2 once; the second schedule reuses all of them
    for experiment in experiments:
        rows = [json.loads((experiment / "seed_0" / f"level_{lvl}" / "metrics.json").read_text()) for lvl in range(3)]
        assert [r["target_density"] for r in rows] == pytest.approx([1.0, 0.8, 0.64])
    reused = [e for e in experiments if "reused_from" in json.loads((e / "seed_0/level_2/metrics.json").read_text())]
    assert len(reused) == 2


def test_levels_are_not_reused_when_the_kept_counts_differ(tmp_path):
    import lottery.training.fit as fit
    from lottery.cli import run_config

    trained = []
    fit_stack = fit.fit_stack
    fit.fit_stack = lambda setups, specs, trackers: (
        trained.extend(spec.level for spec in specs) or fit_stack(setups, specs, trackers)
    )
    try:
        run_config(compose_config(tiny(tmp_path, "pruning=global_20", "levels=2")))
        run_config(compose_config(tiny(tmp_path, "pruning=target_list", "pruning.densities=[0.8,0.5]")))
    finally:
        fit.fit_stack = fit_stack
    assert trained == [0, 1, 2, 2]  # level 0 and level 1 (80%) are shared; level 2 (64% vs 50%) is not


def test_geometric_per_level_fraction_formula_is_exact():
    for target, n in ((0.01, 20), (0.05, 7), (0.5, 1)):
        s = SparsitySchedule.build("geometric", target=target, over_levels=n)
        assert s.per_level_fraction == 1 - target ** (1 / n)
        assert math.isclose(s.density(n), target, rel_tol=1e-12)
