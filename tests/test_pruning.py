"""Magnitude pruning: exact per-level counts (global and LTH layerwise), which weights go, and config errors."""

from __future__ import annotations

import re

import pytest
import torch

from lottery.core.masks import dense_mask, density, is_subset, prunable_weights, remaining, total
from lottery.core.pruning import PruningConfigError, PruningPlan, check_fraction, keep_count, prune
from lottery.models import MLP, ConvNet

LENET_SIZES = {"fc1.weight": 235200, "fc2.weight": 30000, "fc3.weight": 1000}
LENET_TOTAL = 266200


@pytest.fixture(scope="module")
def lenet_weights():
    torch.manual_seed(0)
    return {k: v.detach() for k, v in prunable_weights(MLP((1, 28, 28), 10, [300, 100])).items()}


@pytest.fixture(scope="module")
def conv_names():
    return list(prunable_weights(ConvNet((1, 8, 8), 10, [64, 128])))


def _retrained(weights, gen):
    """Fresh random weights of the same shapes, standing in for the weights after another round of training."""
    return {name: torch.randn(w.shape, generator=gen) for name, w in weights.items()}


# ---- keep_count


@pytest.mark.parametrize(
    ("n", "d", "expected"),
    [
        (1, 0.5, 1),
        (3, 0.5, 2),
        (5, 0.5, 3),
        (10, 0.25, 3),
        (10, 0.24, 2),
        (10, 0.26, 3),
        (4, 0.125, 1),
        (4, 0.124, 0),
        (100, 1.0, 100),
        (100, 0.0, 0),
        (0, 0.5, 0),
        (235200, 0.8, 188160),
        (1000, 0.9**3, 729),
    ],
)
def test_keep_count_rounds_half_up(n, d, expected):
    assert keep_count(n, d) == expected


# ---- global pruning of LeNet-300-100


def test_global_pruning_lenet_exact_counts(lenet_weights):
    names = list(lenet_weights)
    assert {n: w.numel() for n, w in lenet_weights.items()} == LENET_SIZES
    plan = PruningPlan.build(names, scope="global", fraction=0.2)
    assert plan.rates == {n: 0.2 for n in names}
    assert plan.ignored == ()
    gen = torch.Generator().manual_seed(1)
    mask = dense_mask(lenet_weights)
    for level in range(1, 11):
        new = prune(_retrained(lenet_weights, gen), mask, plan, level)
        assert list(new) == names
        assert all(new[n].dtype == torch.bool and new[n].shape == lenet_weights[n].shape for n in names)
        assert total(new) == LENET_TOTAL
        assert remaining(new) == keep_count(LENET_TOTAL, 0.8**level)
        assert abs(density(new) - 0.8**level) <= 1 / LENET_TOTAL
        assert is_subset(new, mask)
        mask = new
    assert remaining(mask) == 28583  # 266200 * 0.8**10 = 28583.2


def test_global_pruning_ranks_across_layers():
    # Layer "big" has all the large weights; a global ranking prunes only from "small".
    weights = {"big.weight": torch.full((6,), 10.0), "small.weight": torch.arange(1.0, 5.0)}
    plan = PruningPlan.build(list(weights), scope="global", fraction=0.2)
    new = prune(weights, dense_mask(weights), plan, 1)  # keep round(10 * 0.8) = 8 of 10
    assert torch.equal(new["big.weight"], torch.ones(6, dtype=torch.bool))
    assert torch.equal(new["small.weight"], torch.tensor([False, False, True, True]))


# ---- layerwise pruning with the LTH schedule for LeNet (fc3 pruned at half the rate)


def test_lth_layerwise_schedule_lenet(lenet_weights):
    names = list(lenet_weights)
    plan = PruningPlan.build(names, scope="layerwise", fraction=0.2, overrides={"fc3": 0.1})
    assert plan.rates == {"fc1.weight": 0.2, "fc2.weight": 0.2, "fc3.weight": 0.1}
    published = {3: 51.3, 7: 21.1, 9: 13.5, 12: 7.0, 15: 3.6, 18: 1.9}  # % remaining reported by Frankle & Carbin 2019
    gen = torch.Generator().manual_seed(2)
    mask = dense_mask(lenet_weights)
    seen = {}
    for level in range(1, 19):
        new = prune(_retrained(lenet_weights, gen), mask, plan, level)
        for name, size in LENET_SIZES.items():
            assert int(new[name].sum()) == keep_count(size, (1 - plan.rates[name]) ** level), (name, level)
        assert is_subset(new, mask)
        mask = new
        if level in published:
            seen[level] = round(100 * density(mask), 1)
    assert seen == published


def test_layerwise_pruning_is_per_layer():
    # Every weight of "big" is larger than every weight of "small"; layerwise still prunes both.
    weights = {"big.weight": torch.arange(11.0, 21.0), "small.weight": torch.arange(1.0, 11.0)}
    plan = PruningPlan.build(list(weights), scope="layerwise", fraction=0.5)
    new = prune(weights, dense_mask(weights), plan, 1)
    expected = torch.tensor([False] * 5 + [True] * 5)
    assert torch.equal(new["big.weight"], expected)
    assert torch.equal(new["small.weight"], expected)


# ---- which weights go


def test_smallest_magnitudes_are_pruned():
    w = torch.tensor([[0.5, -3.0, 0.1, 2.0], [-0.2, 1.5, -0.05, 4.0]])
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.5)
    new = prune({"w.weight": w}, dense_mask({"w.weight": w}), plan, 1)
    assert torch.equal(new["w.weight"], torch.tensor([[False, True, False, True], [False, True, False, True]]))
    # Level 2 (density 0.25: keep 2 of 8) from the level-1 mask keeps the two largest magnitudes.
    level2 = prune({"w.weight": w}, new, plan, 2)
    assert torch.equal(level2["w.weight"], torch.tensor([[False, True, False, False], [False, False, False, True]]))


def test_pruned_weights_never_come_back():
    mask = {"w.weight": torch.tensor([True, True, True, True, False, False, True, True])}
    # The pruned positions hold huge stale values; the survivors are small.
    w = torch.tensor([0.1, 0.2, 0.3, 0.4, 100.0, -100.0, 0.5, 0.6])
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.5)
    new = prune({"w.weight": w}, mask, plan, 2)  # keep round(8 * 0.25) = 2
    assert torch.equal(new["w.weight"], torch.tensor([False, False, False, False, False, False, True, True]))
    assert is_subset(new, mask)


def test_a_surviving_zero_weight_beats_a_pruned_weight():
    # Survivors that are exactly zero still rank above pruned positions, even when the pruned ones come first.
    mask = {"w.weight": torch.tensor([False, True, True, True])}
    w = {"w.weight": torch.tensor([5.0, 0.0, 0.0, 1.0])}
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.5)
    new = prune(w, mask, plan, 1)  # keep 2 of 4
    assert torch.equal(new["w.weight"], torch.tensor([False, True, False, True]))


def test_pruned_weights_never_come_back_globally():
    mask = {"a.weight": torch.tensor([True, False, True]), "b.weight": torch.tensor([False, True, True, True, True])}
    weights = {"a.weight": torch.tensor([1.0, 50.0, 2.0]), "b.weight": torch.tensor([60.0, 3.0, 4.0, 5.0, 6.0])}
    plan = PruningPlan.build(list(weights), scope="global", fraction=0.5)
    new = prune(weights, mask, plan, 2)  # keep round(8 * 0.25) = 2
    assert torch.equal(new["a.weight"], torch.tensor([False, False, False]))
    assert torch.equal(new["b.weight"], torch.tensor([False, False, False, True, True]))


def test_ties_keep_the_earliest_positions():
    w = {"w.weight": torch.full((2, 5), 0.3)}
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.3)
    first = prune(w, dense_mask(w), plan, 1)  # keep 7 of 10
    second = prune(w, dense_mask(w), plan, 1)
    expected = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert torch.equal(first["w.weight"], expected)
    assert torch.equal(second["w.weight"], expected)


def test_ties_keep_the_earliest_positions_in_a_large_layer():
    # Large enough that an unstable sort would reorder equal scores.
    w = {"w.weight": torch.full((20, 50), -0.7)}
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.5)
    masks = [prune(w, dense_mask(w), plan, 1)["w.weight"] for _ in range(2)]
    expected = torch.zeros(20, 50, dtype=torch.bool)
    expected[:10] = True
    assert torch.equal(masks[0], expected)
    assert torch.equal(masks[1], expected)


def test_ties_among_mixed_magnitudes_keep_the_earliest_positions():
    # 1000 weights taking only the values 0, 1 and 2 (by magnitude): the cut falls inside the run of 1s.
    gen = torch.Generator().manual_seed(4)
    values = torch.randint(0, 3, (1000,), generator=gen).float() * torch.where(
        torch.rand(1000, generator=gen) < 0.5, -1, 1
    )
    w = {"w.weight": values}
    plan = PruningPlan.build(["w.weight"], scope="global", fraction=0.5)
    kept = prune(w, dense_mask(w), plan, 1)["w.weight"]
    twos = values.abs() == 2
    ones = values.abs() == 1
    need = 500 - int(twos.sum())
    assert 0 < need < int(ones.sum())
    expected = twos.clone()
    expected[ones.nonzero().flatten()[:need]] = True
    assert torch.equal(kept, expected)


def test_ties_keep_the_earliest_positions_globally_and_by_magnitude():
    # Equal magnitudes with opposite signs tie too; earlier layers come first in the global ranking.
    weights = {"a.weight": torch.tensor([-1.0, 1.0]), "b.weight": torch.tensor([1.0, -1.0, 1.0])}
    plan = PruningPlan.build(list(weights), scope="global", fraction=0.4)
    new = prune(weights, dense_mask(weights), plan, 1)  # keep 3 of 5
    assert torch.equal(new["a.weight"], torch.tensor([True, True]))
    assert torch.equal(new["b.weight"], torch.tensor([True, False, False]))


def test_prune_does_not_modify_its_inputs():
    w = {"w.weight": torch.tensor([3.0, -1.0, 2.0, 0.5])}
    mask = {"w.weight": torch.tensor([True, True, True, False])}
    w_before, mask_before = w["w.weight"].clone(), mask["w.weight"].clone()
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.5)
    prune(w, mask, plan, 1)
    assert torch.equal(w["w.weight"], w_before)
    assert torch.equal(mask["w.weight"], mask_before)


@pytest.mark.parametrize("level", [0, -1])
def test_prune_rejects_level_below_one(level):
    w = {"w.weight": torch.ones(4)}
    plan = PruningPlan.build(["w.weight"], scope="global", fraction=0.2)
    with pytest.raises(PruningConfigError, match=f"level={level}"):
        prune(w, dense_mask(w), plan, level)


def test_prune_rejects_density_growth():
    # A mask sparser than the level's target cannot be filled back up.
    w = {"w.weight": torch.ones(10)}
    mask = {"w.weight": torch.tensor([True] * 3 + [False] * 7)}
    plan = PruningPlan.build(["w.weight"], scope="layerwise", fraction=0.2)
    with pytest.raises(PruningConfigError, match="keeps 8 weights but only 3 survive"):
        prune(w, mask, plan, 1)


# ---- ignored layers


def test_ignored_layer_has_no_mask_entry(lenet_weights):
    plan = PruningPlan.build(list(lenet_weights), scope="global", fraction=0.2, ignore=["fc3"])
    assert plan.ignored == ("fc3.weight",)
    assert set(plan.rates) == {"fc1.weight", "fc2.weight"}
    gen = torch.Generator().manual_seed(3)
    mask = prune(_retrained(lenet_weights, gen), dense_mask(lenet_weights), plan, 1)
    assert "fc3.weight" not in mask
    assert list(mask) == ["fc1.weight", "fc2.weight"]
    assert remaining(mask) == keep_count(265200, 0.8)
    mask2 = prune(_retrained(lenet_weights, gen), mask, plan, 2)
    assert "fc3.weight" not in mask2
    assert remaining(mask2) == keep_count(265200, 0.64)


def test_ignored_layer_under_layerwise_scope(lenet_weights):
    plan = PruningPlan.build(list(lenet_weights), scope="layerwise", fraction=0.2, ignore=["fc1"])
    assert plan.ignored == ("fc1.weight",)
    assert plan.rates == {"fc2.weight": 0.2, "fc3.weight": 0.2}


# ---- configuration errors


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, 0.0, 1.0, float("nan"), "0.2", None])
def test_bad_fraction(fraction):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(["fc1.weight"], scope="global", fraction=fraction)
    assert f"pruning.fraction={fraction!r}" in str(info.value)


def test_check_fraction_accepts_and_returns_float():
    assert check_fraction(0.2, "x") == 0.2
    assert isinstance(check_fraction(0.5, "x"), float)


def test_bad_scope():
    with pytest.raises(PruningConfigError, match=re.escape("pruning.scope='local'")):
        PruningPlan.build(["fc1.weight"], scope="local", fraction=0.2)


def test_ignore_pattern_matching_nothing(lenet_weights):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(list(lenet_weights), scope="global", fraction=0.2, ignore=["fc3", "fc9"])
    message = str(info.value)
    assert "pruning.ignore" in message
    assert "'fc9'" in message
    assert "'fc3'" not in message.split("prunable layers are")[0]
    assert "['fc1', 'fc2', 'fc3']" in message


def test_override_pattern_matching_nothing(lenet_weights):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(list(lenet_weights), scope="layerwise", fraction=0.2, overrides={"conv*": 0.1})
    assert "pruning.overrides" in str(info.value)
    assert "'conv*'" in str(info.value)


def test_overrides_with_global_scope(lenet_weights):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(list(lenet_weights), scope="global", fraction=0.2, overrides={"fc3": 0.1})
    assert "{'fc3': 0.1}" in str(info.value)
    assert "layerwise" in str(info.value)


@pytest.mark.parametrize("rate", [0.0, 1.0, 2, False])
def test_bad_override_rate(lenet_weights, rate):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(list(lenet_weights), scope="layerwise", fraction=0.2, overrides={"fc3": rate})
    assert f"pruning.overrides['fc3']={rate!r}" in str(info.value)


@pytest.mark.parametrize("ignore", [["fc*"], ["fc1", "fc2", "fc3"], ["*"]])
def test_ignoring_every_layer(lenet_weights, ignore):
    with pytest.raises(PruningConfigError) as info:
        PruningPlan.build(list(lenet_weights), scope="global", fraction=0.2, ignore=ignore)
    assert f"pruning.ignore={ignore!r}" in str(info.value)
    assert "no layer to prune" in str(info.value)


def test_pruning_config_error_is_a_value_error():
    assert issubclass(PruningConfigError, ValueError)


# ---- fnmatch patterns


def test_override_pattern_applies_to_all_matching_layers(lenet_weights):
    plan = PruningPlan.build(list(lenet_weights), scope="layerwise", fraction=0.2, overrides={"fc*": 0.5})
    assert plan.rates == {"fc1.weight": 0.5, "fc2.weight": 0.5, "fc3.weight": 0.5}


def test_conv_pattern_on_convnet(conv_names):
    plan = PruningPlan.build(conv_names, scope="layerwise", fraction=0.2, overrides={"conv*": 0.1, "fc3": 0.3})
    assert plan.rates == {
        "conv1.weight": 0.1,
        "conv2.weight": 0.1,
        "conv3.weight": 0.1,
        "conv4.weight": 0.1,
        "fc1.weight": 0.2,
        "fc2.weight": 0.2,
        "fc3.weight": 0.3,
    }
    ignored = PruningPlan.build(conv_names, scope="global", fraction=0.2, ignore=["conv*"])
    assert ignored.ignored == ("conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight")
    assert list(ignored.rates) == ["fc1.weight", "fc2.weight", "fc3.weight"]


def test_patterns_match_whole_names_case_sensitively(conv_names):
    plan = PruningPlan.build(conv_names, scope="layerwise", fraction=0.2, overrides={"conv?": 0.1})
    assert [n for n, r in plan.rates.items() if r == 0.1] == [f"conv{i}.weight" for i in range(1, 5)]
    with pytest.raises(PruningConfigError, match="'Conv1'"):
        PruningPlan.build(conv_names, scope="layerwise", fraction=0.2, overrides={"Conv1": 0.1})
    with pytest.raises(PruningConfigError, match="'conv'"):
        PruningPlan.build(conv_names, scope="global", fraction=0.2, ignore=["conv"])


def test_layer_densities():
    plan = PruningPlan.build(["a.weight", "b.weight"], scope="layerwise", fraction=0.2, overrides={"b": 0.5})
    assert plan.layer_density("a.weight", 0) == 1.0
    assert plan.layer_density("a.weight", 2) == pytest.approx(0.64, rel=1e-12)
    assert plan.layer_density("b.weight", 3) == 0.125
    global_plan = PruningPlan.build(["a.weight", "b.weight"], scope="global", fraction=0.5)
    assert global_plan.global_density(3) == 0.125
