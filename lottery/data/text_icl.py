"""Few-shot text tasks for pretrained language models (data=icl_text), from the word lists in lottery/data/word_lists/
(written for this package, one `x<TAB>y` pair a line):

    antonyms      hot -> cold              capitals      France -> Paris        capitalise    apple -> Apple
    number_words  7 -> seven               next_item     March -> April         plural        mouse -> mice

or a user's own list of such lines (data.task_file, which overrides data.task; lottery/data/text_pairs.py).

A prompt is k demonstrations and a query, `x_1 -> y_1\\n ... x_k -> y_k\\nx ->`, followed by the answer ` y`; k cycles
through `data.shots`, so every split holds as many prompts of each k. The task's pairs are split once (by
`data.data_seed`) into query pairs of the test prompts and the rest, which give the training prompts' queries and
every prompt's demonstrations, so no test answer appears in any training prompt. Queries cycle through their pairs in
shuffled orders (a fresh order each round), so every pair is asked as often as any other, give or take one.

Prompt and answer are tokenized as one string with the model's own tokenizer, BOS first where the tokenizer's own
convention puts one (lottery/data/text_tokens.py: a sentencepiece-style tokenizer tokenizes ` y` alone differently
from ` y` after the prompt, and the joint tokens are what the model reads); then right-padded. Inputs are the prompt
and the answer but its last token (teacher forcing), targets the answer's tokens at the positions that predict them
(lottery/data/text_task.py scores them by exact match). Everything is a function of the seed.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import torch

from lottery.core.seeds import derive_seed
from lottery.data.splits import Splits
from lottery.data.tasks import IGNORE
from lottery.data.text_pairs import TASKS, WORD_LISTS, check_pair_count, read_pairs, split_sizes, task_name, task_pairs
from lottery.data.text_task import ExactMatch
from lottery.data.text_tokens import TextTaskError, bos_ids, joint_ids, pad_id

__all__ = ["TASKS", "WORD_LISTS", "TextTaskError", "check_text_settings", "load_text", "load_tokenizer", "read_pairs"]


class Prompt(NamedTuple):
    text: str  # the demonstrations and the query, `... x ->`
    answer: str  # ` y`
    shots: int  # k, the number of demonstrations
    query: str  # x


def check_text_settings(settings: Any) -> None:
    """Also run by lottery.validate, so a bad word list is refused before any data or weights load."""
    if not settings.shots or any(k < 0 for k in settings.shots):
        raise TextTaskError(f"data.shots={list(settings.shots)} must list numbers of demonstrations >= 0, e.g. [0,1,4]")
    if not 0.0 < settings.test_fraction < 1.0:
        raise TextTaskError(f"data.test_fraction={settings.test_fraction} must lie in (0, 1), e.g. 0.3")
    if settings.num_train < 2 or settings.num_test < 1:
        raise TextTaskError(
            f"data.num_train={settings.num_train} must be >= 2 and data.num_test={settings.num_test} >= 1"
        )
    check_pair_count(task_pairs(settings), settings)


def prompt_text(demos: list[tuple[str, str]], query: str) -> str:
    return "".join(f"{x} -> {y}\n" for x, y in demos) + f"{query} ->"


def cycled(n: int, count: int, generator: torch.Generator) -> list[int]:
    """n indices into `count` items: shuffled orders of all of them one after another (a fresh order each round), so
    every item comes n // count or n // count + 1 times; drawing with replacement would ask some pairs many times and
    leave others out of a small test split."""
    order: list[int] = []
    while len(order) < n:
        order += torch.randperm(count, generator=generator).tolist()
    return order[:n]


def draw_prompts(
    n: int, queries: list[tuple[str, str]], demos: list[tuple[str, str]], shots: list[int], generator: torch.Generator
) -> list[Prompt]:
    """n prompts whose queries cycle through `queries`; the demonstrations never include the query's own pair."""
    out = []
    for i, q in enumerate(cycled(n, len(queries), generator)):
        k = shots[i % len(shots)]
        x, y = queries[q]
        pool = [p for p in demos if p[0] != x]
        if k > len(pool):
            raise TextTaskError(f"data.shots asks for {k} demonstrations, but the task has {len(pool)} to draw from")
        chosen = [pool[j] for j in torch.randperm(len(pool), generator=generator)[:k].tolist()]
        out.append(Prompt(prompt_text(chosen, x), f" {y}", k, x))
    return out


def check_coverage(tokenizer: Any, pairs: list[tuple[str, str]]) -> None:
    """Refuse a task whose words the tokenizer cannot spell (beyond its vocabulary): an answer that tokenizes to
    nothing or to the unknown token cannot be scored, and queries read as unknown tokens are indistinguishable."""
    unk = tokenizer.unk_token_id
    for x, y in pairs:
        ids, start = joint_ids(tokenizer, prompt_text([], x), f" {y}")
        if start == len(ids):
            raise TextTaskError(
                f"the answer {y!r} (query {x!r}) tokenized to nothing: the tokenizer does not cover the task's words; "
                "use another task (data.task, data.task_file) or a model whose tokenizer spells them"
            )
        if unk is not None and unk in ids[start:]:
            raise TextTaskError(
                f"the answer {y!r} (query {x!r}) holds the tokenizer's unknown token {tokenizer.unk_token!r}: the "
                "word is beyond its vocabulary and cannot be scored; drop the pair from the task (data.task_file) "
                "or use a model whose tokenizer spells it"
            )
        if unk is not None and unk in ids[:start]:
            raise TextTaskError(
                f"the query {x!r} or the separator ' ->' holds the tokenizer's unknown token "
                f"{tokenizer.unk_token!r}: the model would read an unknown word; drop the pair from the task "
                "(data.task_file) or use a model whose tokenizer spells it"
            )


def tokenize_prompts(prompts: list[Prompt], tokenizer: Any, bos: list[int]) -> list[tuple[list[int], int, int]]:
    """(ids of BOS + prompt + answer, index of the answer's first token, k) per prompt."""
    rows = []
    for p in prompts:
        ids, start = joint_ids(tokenizer, p.text, p.answer)
        if start == len(ids):
            raise TextTaskError(f"the answer {p.answer!r} of the query {p.query!r} tokenized to nothing in its prompt")
        rows.append((bos + ids, len(bos) + start, p.shots))
    return rows


def encode(rows: list[tuple[list[int], int, int]], pad: int, length: int | None = None):
    """(inputs (n, T) int64, targets (n, T + 1) int64): column T of the targets holds each prompt's k."""
    length = length or max(len(ids) - 1 for ids, _, _ in rows)
    x = torch.full((len(rows), length), pad, dtype=torch.int64)
    y = torch.full((len(rows), length + 1), IGNORE, dtype=torch.int64)
    for i, (ids, start, k) in enumerate(rows):
        x[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, start - 1 : len(ids) - 1] = torch.tensor(ids[start:])  # position t predicts token t + 1
        y[i, length] = k
    return x, y


@cache
def load_tokenizer(path: str, gguf_file: str | None = None):
    """The model's own tokenizer (local files only when `path` is a folder or HF_HUB_OFFLINE=1), or the one held in
    the GGUF file `gguf_file` inside the folder `path`."""
    from transformers import AutoTokenizer

    local = Path(path).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=local, gguf_file=gguf_file)
    except (OSError, ValueError) as err:
        raise TextTaskError(
            f"no tokenizer could be loaded from {path!r} ({err}); save the model's tokenizer beside it "
            "(tokenizer.save_pretrained(model.path)) or use a token task such as data=icl_recall"
        ) from None


def load_text(settings: Any) -> Splits:
    check_text_settings(settings)
    tokenizer = load_tokenizer(str(settings.tokenizer), getattr(settings, "tokenizer_gguf", None))
    pairs = task_pairs(settings)
    check_coverage(tokenizer, pairs)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(derive_seed(settings.data_seed, 0)))
    n_test, _ = split_sizes(len(pairs), settings.test_fraction)
    test_pairs = [pairs[i] for i in order[:n_test].tolist()]
    train_pairs = [pairs[i] for i in order[n_test:].tolist()]
    shots = list(settings.shots)
    train = draw_prompts(settings.num_train, train_pairs, train_pairs, shots, _gen(settings.data_seed, 1))
    test = draw_prompts(settings.num_test, test_pairs, train_pairs, shots, _gen(settings.data_seed, 2))
    bos = bos_ids(tokenizer)
    train_rows, test_rows = tokenize_prompts(train, tokenizer, bos), tokenize_prompts(test, tokenizer, bos)
    length = max(len(ids) - 1 for ids, _, _ in train_rows + test_rows)  # one length for both splits
    x_train, y_train = encode(train_rows, pad_id(tokenizer), length)
    x_test, y_test = encode(test_rows, pad_id(tokenizer), length)
    held_out = {x: i for i, (x, _) in enumerate(test_pairs)}
    task = ExactMatch(
        n_answers=len({y for _, y in pairs}),
        distinct_queries=len({p.query for p in test}),
        name=task_name(settings),
        test_queries=[held_out[p.query] for p in test],
    )
    return Splits(x_train, y_train, x_test, y_test, num_classes=len(tokenizer), task=task)


def _gen(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream))
