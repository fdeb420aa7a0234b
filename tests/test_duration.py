"""Durations: parsing '500it' / '2ep' / '1ep50it', conversion to steps, printing, and the errors for bad input."""

from __future__ import annotations

import pytest

from lottery.core.duration import Duration, DurationError, steps


@pytest.mark.parametrize(
    ("text", "epochs", "iterations"),
    [
        ("500it", 0, 500),
        ("2ep", 2, 0),
        ("1ep50it", 1, 50),
        (" 3EP ", 3, 0),
        ("0it", 0, 0),
        ("0ep", 0, 0),
        ("10Ep7IT", 10, 7),
        ("\t12it\n", 0, 12),
        ("007it", 0, 7),
    ],
)
def test_parse(text, epochs, iterations):
    assert Duration.parse(text) == Duration(epochs=epochs, iterations=iterations)


def test_parse_passes_a_duration_through():
    d = Duration(1, 2)
    assert Duration.parse(d) is d


@pytest.mark.parametrize(
    ("text", "steps_per_epoch", "expected"),
    [
        ("500it", 60, 500),
        ("2ep", 60, 120),
        ("1ep50it", 60, 110),
        ("1ep50it", 1, 51),
        ("0it", 7, 0),
        ("3ep", 469, 1407),
    ],
)
def test_to_steps(text, steps_per_epoch, expected):
    assert Duration.parse(text).to_steps(steps_per_epoch) == expected
    assert steps(text, steps_per_epoch) == expected


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (Duration(0, 500), "500it"),
        (Duration(2, 0), "2ep"),
        (Duration(1, 50), "1ep50it"),
        (Duration(0, 0), "0it"),
    ],
)
def test_str_round_trip(duration, text):
    assert str(duration) == text
    assert Duration.parse(str(duration)) == duration


def test_str_normalises_written_form():
    assert str(Duration.parse(" 1EP0IT ")) == "1ep"
    assert str(Duration.parse("0ep25it")) == "25it"


def test_durations_order_by_epochs_then_iterations():
    assert Duration.parse("1ep") > Duration.parse("999it")
    assert Duration.parse("1ep1it") > Duration.parse("1ep")
    assert sorted([Duration.parse(t) for t in ("2ep", "5it", "1ep50it")]) == [
        Duration(0, 5),
        Duration(1, 50),
        Duration(2, 0),
    ]


def test_duration_is_frozen():
    d = Duration(1, 2)
    with pytest.raises(AttributeError):
        d.epochs = 5  # type: ignore[misc]


@pytest.mark.parametrize("text", ["", "   ", "5", "abc", "1it2ep", "-1it", "1.5ep", "ep", "it", "1ep 50it", "2epochs"])
def test_parse_rejects_bad_strings(text):
    with pytest.raises(DurationError) as info:
        Duration.parse(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [5, 2.0, None, ["1ep"]])
def test_parse_rejects_non_strings(value):
    with pytest.raises(DurationError) as info:
        Duration.parse(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)
    assert type(value).__name__ in str(info.value)


def test_duration_error_is_a_value_error():
    assert issubclass(DurationError, ValueError)
    with pytest.raises(ValueError):
        Duration.parse("abc")


@pytest.mark.parametrize("steps_per_epoch", [0, -3])
def test_to_steps_rejects_non_positive_steps_per_epoch(steps_per_epoch):
    with pytest.raises(DurationError) as info:
        Duration.parse("1ep50it").to_steps(steps_per_epoch)
    message = str(info.value)
    assert f"got {steps_per_epoch}" in message
    assert "1ep50it" in message
    with pytest.raises(DurationError, match=f"got {steps_per_epoch}"):
        steps("10it", steps_per_epoch)
