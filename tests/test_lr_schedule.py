"""LR multipliers: constant, step, cosine and linear decay, linear warm-up, and the setting errors."""

from __future__ import annotations

import pytest

from lottery.core.lr_schedule import KINDS, ScheduleError, lr_multiplier


def approx(value):
    return pytest.approx(value, rel=1e-12, abs=1e-15)


def test_kinds():
    assert KINDS == ("constant", "step", "cosine", "linear")


def test_constant():
    f = lr_multiplier("constant", total_steps=100)
    assert [f(s) for s in (0, 1, 50, 99, 100, 1000)] == [1.0] * 6


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (9, 1.0), (10, 0.1), (11, 0.1), (19, 0.1), (20, 0.01), (29, 0.01), (30, 0.01)],
)
def test_step(step, expected):
    f = lr_multiplier("step", total_steps=30, milestones=[10, 20], gamma=0.1)
    assert f(step) == approx(expected)


def test_step_milestones_in_any_order_and_custom_gamma():
    f = lr_multiplier("step", total_steps=30, milestones=[20, 10], gamma=0.5)
    assert [f(s) for s in (0, 9, 10, 19, 20, 30)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_step_repeated_milestone_decays_twice():
    f = lr_multiplier("step", total_steps=30, milestones=[10, 10], gamma=0.5)
    assert f(9) == 1.0
    assert f(10) == 0.25


def test_step_milestone_at_the_last_step_is_allowed():
    f = lr_multiplier("step", total_steps=30, milestones=[30])
    assert f(29) == 1.0
    assert f(30) == approx(0.1)


def test_step_without_milestones_is_constant():
    f = lr_multiplier("step", total_steps=30)
    assert [f(s) for s in (0, 15, 30)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 1.0), (25, 0.5 + 0.5 * 0.5**0.5), (50, 0.5), (100, 0.0), (150, 0.0)]
)
def test_cosine(step, expected):
    f = lr_multiplier("cosine", total_steps=100)
    assert f(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (25, 0.75), (50, 0.5), (100, 0.0), (120, 0.0)])
def test_linear(step, expected):
    f = lr_multiplier("linear", total_steps=100)
    assert f(step) == approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (1, 0.1), (5, 0.5), (10, 1.0), (11, 1.0), (100, 1.0)])
def test_warmup_then_constant(step, expected):
    f = lr_multiplier("constant", total_steps=100, warmup_steps=10)
    assert f(step) == approx(expected)


def test_warmup_multiplies_the_decay():
    f = lr_multiplier("step", total_steps=100, warmup_steps=20, milestones=[10], gamma=0.1)
    assert f(0) == 0.0
    assert f(10) == approx(0.5 * 0.1)
    assert f(20) == approx(0.1)
    g = lr_multiplier("linear", total_steps=100, warmup_steps=50)
    assert g(25) == approx(0.5 * 0.75)
    assert g(50) == approx(0.5)


def test_warmup_over_the_whole_training_is_allowed():
    f = lr_multiplier("constant", total_steps=10, warmup_steps=10)
    assert f(5) == 0.5
    assert f(10) == 1.0


def test_same_step_same_value():
    # Pure functions: rewinding to step k replays the same LR (no hidden scheduler state).
    f = lr_multiplier("cosine", total_steps=1000, warmup_steps=100)
    first = [f(s) for s in range(0, 1000, 37)]
    assert [f(s) for s in range(0, 1000, 37)] == first
    assert f(300) == lr_multiplier("cosine", total_steps=1000, warmup_steps=100)(300)


def test_unknown_kind():
    with pytest.raises(ScheduleError) as info:
        lr_multiplier("exponential", total_steps=100)
    assert "'exponential'" in str(info.value)


@pytest.mark.parametrize("warmup", [101, -1])
def test_bad_warmup(warmup):
    with pytest.raises(ScheduleError) as info:
        lr_multiplier("constant", total_steps=100, warmup_steps=warmup)
    assert f"warm-up of {warmup} steps" in str(info.value)
    assert "100 steps" in str(info.value)


@pytest.mark.parametrize(("milestones", "bad"), [([10, 101], "[101]"), ([0, 50], "[0]"), ([-5, 200], "[-5, 200]")])
def test_milestone_outside_training(milestones, bad):
    with pytest.raises(ScheduleError) as info:
        lr_multiplier("step", total_steps=100, milestones=milestones)
    assert f"LR milestones {bad}" in str(info.value)


def test_schedule_error_is_a_value_error():
    assert issubclass(ScheduleError, ValueError)
