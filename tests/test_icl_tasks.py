"""In-context learning prompts: deterministic given their seed, targets that are what the task says, and losses and
metrics that score only the query positions."""

from __future__ import annotations

import pytest
import torch

from lottery.config import RecallDataConfig, RegressionDataConfig
from lottery.data import load
from lottery.data.tasks import IGNORE, Regression, TokenRecall

RECALL = RecallDataConfig(name="icl_recall", num_train=300, num_test=50, n_keys=5, n_values=7, n_pairs=9)
REGRESSION = RegressionDataConfig(name="icl_regression", num_train=300, num_test=50, n_dims=3, n_points=8)


@pytest.mark.parametrize("settings", [RECALL, REGRESSION], ids=["recall", "regression"])
def test_the_prompts_are_deterministic_given_their_seed(settings):
    a, b = load(settings.name, settings=settings), load(settings.name, settings=settings)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field).nan_to_num(), getattr(b, field).nan_to_num()), field
    other = load(settings.name, settings=type(settings)(**{**vars(settings), "data_seed": 99}))
    assert not torch.equal(a.x_train, other.x_train)
    assert not torch.equal(a.x_train[: len(a.x_test)], a.x_test)  # test prompts are another stream
    state = torch.get_rng_state()
    load(settings.name, settings=settings)
    assert torch.equal(state, torch.get_rng_state())  # private generators: the global stream is untouched


@pytest.mark.parametrize("form", ["pair", "split"])
def test_recall_queries_are_the_pairs_of_earlier_occurrences_of_their_key(form):
    splits = load("icl_recall", settings=RecallDataConfig(**{**vars(RECALL), "format": form}))
    x, y = splits.x_train, splits.y_train
    vocab = 5 + 7 * (5 if form == "pair" else 1)
    assert x.shape == y.shape == (300, 2 * 9 - 1) and splits.num_classes == vocab and splits.input_shape == (17,)
    keys, values = x[:, 0::2], x[:, 1::2]
    assert bool((keys < 5).all()) and bool((values >= 5).all()) and bool((values < vocab).all())
    if form == "pair":  # a pair token names its key
        assert torch.equal((values - 5) // 7, keys[:, :-1])
    else:
        other = load("icl_recall", settings=RECALL)  # the same keys and tables, encoded as pairs
        assert torch.equal(other.x_train[:, 0::2], keys) and torch.equal((other.x_train[:, 1::2] - 5) % 7 + 5, values)
    assert bool((y[:, 1::2] == IGNORE).all())  # pair positions are never queries
    for p in range(50):
        table = {}
        for i in range(9):
            k = int(keys[p, i])
            if k in table:
                assert int(y[p, 2 * i]) == table[k]  # the value this key was paired with before
            else:
                assert int(y[p, 2 * i]) == IGNORE  # a key seen for the first time cannot be recalled
            if i < 8:
                table.setdefault(k, int(values[p, i]))
                assert table[k] == int(values[p, i])  # one table per prompt
        assert int(y[p, -1]) != IGNORE  # the final key is always a query


def test_regression_targets_follow_one_linear_map_per_prompt():
    splits = load("icl_regression", settings=REGRESSION)
    x, y = splits.x_train, splits.y_train
    assert x.shape == (300, 15, 4) and y.shape == (300, 15) and splits.num_classes == 1
    assert bool(torch.isnan(y[:, 1::2]).all()) and not bool(torch.isnan(y[:, 0::2]).any())
    xs = x[:, 0::2, :3]
    assert bool((x[:, 0::2, 3] == 0).all()) and bool((x[:, 1::2, :3] == 0).all())
    assert torch.equal(x[:, 1::2, 3], y[:, 0::2][:, :-1])  # each y-token carries the previous query's target
    w = torch.linalg.lstsq(xs[:, :, :], y[:, 0::2, None]).solution  # noiseless: one w explains all 8 points
    assert torch.allclose(xs @ w, y[:, 0::2, None], atol=1e-4)


def test_losses_and_metrics_score_only_the_query_positions():
    recall = TokenRecall(n_values=4)
    y = torch.tensor([[IGNORE, IGNORE, 3, IGNORE], [1, IGNORE, 2, IGNORE]])
    outputs = torch.zeros(2, 4, 5)
    outputs[0, 2, 3] = outputs[1, 0, 1] = outputs[1, 2, 0] = 10.0  # right, right, wrong
    outputs[0, 0, 4] = outputs[0, 1, 4] = 50.0  # confident predictions at ignored positions change nothing
    acc, loss = recall.metrics(outputs, y)
    assert acc == pytest.approx(2 / 3) and recall.chance(y) == 0.25
    per_example = recall.per_example_loss(outputs, y)
    assert per_example.shape == (2,) and float(per_example[0]) < 1e-3 < float(per_example[1])
    assert loss == pytest.approx(float(recall.loss(outputs, y)))
    by = recall.by_context(outputs, y)  # positions 0 and 2 hold queries after 0 and 1 in-context examples
    assert by["examples"] == [0, 1] and by["acc"] == [1.0, 0.5] and by["count"] == [1, 2]

    regression = Regression(n_dims=2, tolerance=0.1)
    y = torch.tensor([[1.0, float("nan"), 2.0]])
    outputs = torch.tensor([[[1.2], [7.0], [3.0]]], requires_grad=True)
    acc, nse = regression.metrics(outputs, y)
    assert acc == 0.5 and nse == pytest.approx((0.2**2 / 2 + 1 / 2) / 2)
    regression.loss(outputs, y).backward()
    assert bool(torch.isfinite(outputs.grad).all()) and float(outputs.grad[0, 1, 0]) == 0.0  # NaN targets inert
    assert regression.chance(torch.tensor([[0.1, float("nan"), 3.0]])) == 0.5  # predicting 0 gets |y| small right
