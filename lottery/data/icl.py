"""In-context learning prompts, generated on the fly from a seed (nothing downloads, nothing is stored):

    icl_recall      associative recall: key-value pairs, keys drawn with replacement from `n_keys`, each prompt
                    with its own random key -> value table. Every key is followed by its pair; a key that occurred
                    earlier in the prompt is a query, and the model must predict the pair that follows it from the
                    earlier one; the last key always repeats an earlier one (the final query). Chance is 1 / n_values.
                    format=pair: k_1 P_1 k_2 P_2 ... k_K, P_i one token for the pair (k_i, v_i); one attention layer
                    can look the value up. format=split: k_1 v_1 k_2 v_2 ... k_K, the value its own token, so the
                    model needs an induction circuit (a previous-token head feeding a matching head in a later
                    layer), which a small model learns abruptly after a plateau of thousands of steps.
    icl_regression  linear regression (Garg et al. 2022): x_1 y_1 ... x_K with x ~ N(0, I_d), w ~ N(0, I_d) per prompt
                    and y = w.x + noise; the model predicts y_i at x_i's position, from the i pairs before it.
                    x-tokens are [x, 0], y-tokens [0, ..., 0, y] (d + 1 inputs).

Query positions are the even positions 2i (i complete examples before them); other targets are ignored (-100 for
tokens, NaN for regression). The training pool (`num_train` prompts, from which the validation split is carved) and
the test prompts come from two streams of one seed, `data.data_seed`, shared by every run seed so that seeds compare
on the same prompts, as with the other datasets. A pool of 40,000 prompts holds 40,000 distinct key tables or weight
vectors, far more than a small model can memorise, so it learns the in-context algorithm, not the tasks.
"""

from __future__ import annotations

from typing import Any

import torch

from lottery.core.seeds import derive_seed
from lottery.data.splits import Splits
from lottery.data.tasks import IGNORE, Regression, TokenRecall

# The sequence datasets transformers read. icl_text: lottery/data/text_icl.py; lm_text (plain text, next-token
# prediction rather than in-context prompts): lottery/data/lm_text.py
ICL_DATASETS = ("icl_recall", "icl_regression", "icl_text", "lm_text")


def _generator(seed: int, stream: int) -> torch.Generator:
    state = derive_seed(seed, stream)
    return torch.Generator().manual_seed(state)


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a_1 b_1 a_2 b_2 ... a_K (the last b is dropped: nothing follows it to predict)."""
    out = torch.stack([a, b], dim=2).flatten(1, 2)
    return out[:, :-1]


def make_recall(n: int, n_keys: int, n_values: int, n_pairs: int, generator: torch.Generator, pair: bool = True):
    """(tokens (n, 2K-1) int64, targets (n, 2K-1) int64). Keys are tokens 0..n_keys-1; then pair tokens
    n_keys + key * n_values + value (pair=True), or value tokens n_keys + value (pair=False). The same generator
    state gives the same keys and tables in both formats."""
    keys = torch.randint(n_keys, (n, n_pairs), generator=generator)
    earlier = torch.randint(n_pairs - 1, (n,), generator=generator)
    keys[:, -1] = keys[torch.arange(n), earlier]  # the final query repeats an earlier key
    table = torch.randint(n_values, (n, n_keys), generator=generator)
    values = table.gather(1, keys)
    values = n_keys + (keys * n_values + values if pair else values)
    onehot = torch.nn.functional.one_hot(keys, n_keys)
    before = onehot.cumsum(1) - onehot  # occurrences of each key strictly before pair i
    seen = before.gather(2, keys[..., None])[..., 0] > 0
    targets = torch.full((n, 2 * n_pairs - 1), IGNORE, dtype=torch.int64)
    targets[:, 0::2] = torch.where(seen, values, IGNORE)
    return _interleave(keys, values), targets


def make_regression(n: int, n_dims: int, n_points: int, noise_std: float, generator: torch.Generator):
    """(tokens (n, 2K-1, d+1) float32, targets (n, 2K-1) float32 with NaN off the query positions)."""
    w = torch.randn(n, n_dims, 1, generator=generator)
    xs = torch.randn(n, n_points, n_dims, generator=generator)
    ys = (xs @ w)[..., 0] + noise_std * torch.randn(n, n_points, generator=generator)
    x_tokens = torch.cat([xs, torch.zeros(n, n_points, 1)], dim=2)
    y_tokens = torch.cat([torch.zeros(n, n_points, n_dims), ys[..., None]], dim=2)
    tokens = torch.stack([x_tokens, y_tokens], dim=2).flatten(1, 2)[:, :-1]
    targets = torch.full((n, 2 * n_points - 1), float("nan"))
    targets[:, 0::2] = ys
    return tokens, targets


def check_settings(settings: Any) -> None:
    """ValueError naming the first out-of-range setting (also run by lottery.validate before any training)."""

    def positive(key: str, minimum: int = 1) -> None:
        value = getattr(settings, key)
        if value < minimum:
            raise ValueError(f"data.{key}={value} must be at least {minimum}")

    if settings.name == "icl_text":
        from lottery.data.text_icl import check_text_settings

        return check_text_settings(settings)
    if settings.name == "lm_text":
        from lottery.data.lm_text import check_lm_settings

        return check_lm_settings(settings)
    positive("num_train", 2)
    positive("num_test")
    if settings.name == "icl_recall":
        if settings.format not in ("pair", "split"):
            raise ValueError(f"data.format={settings.format!r} is not pair or split")
        positive("n_keys")
        positive("n_values", 2)
        positive("n_pairs", 2)
    else:
        positive("n_dims")
        positive("n_points", 2)
        if settings.noise_std < 0 or not 0 < settings.acc_tolerance:
            raise ValueError(
                f"data.noise_std={settings.noise_std} must be >= 0 and data.acc_tolerance={settings.acc_tolerance} "
                "> 0 (a normalised squared error, e.g. 0.1)"
            )


def load_icl(settings: Any) -> Splits:
    """The prompts of `settings` (a RecallDataConfig or RegressionDataConfig), with the task that scores them."""
    check_settings(settings)
    train_gen, test_gen = _generator(settings.data_seed, 0), _generator(settings.data_seed, 1)
    if settings.name == "icl_recall":
        args = (settings.n_keys, settings.n_values, settings.n_pairs)
        pair = settings.format == "pair"
        x_train, y_train = make_recall(settings.num_train, *args, train_gen, pair)
        x_test, y_test = make_recall(settings.num_test, *args, test_gen, pair)
        vocab = settings.n_keys + settings.n_values * (settings.n_keys if pair else 1)
        return Splits(x_train, y_train, x_test, y_test, num_classes=vocab, task=TokenRecall(settings.n_values))
    args = (settings.n_dims, settings.n_points, settings.noise_std)
    x_train, y_train = make_regression(settings.num_train, *args, train_gen)
    x_test, y_test = make_regression(settings.num_test, *args, test_gen)
    task = Regression(settings.n_dims, settings.acc_tolerance)
    return Splits(x_train, y_train, x_test, y_test, num_classes=1, task=task)
