"""Few-shot text tasks for pretrained language models (data=icl_text), from the word lists in lottery/data/word_lists/
(written for this package, one `x<TAB>y` pair a line):

    antonyms      hot -> cold              capitals      France -> Paris        capitalise    apple -> Apple
    number_words  7 -> seven               next_item     March -> April         plural        mouse -> mice

A prompt is k demonstrations and a query, `x_1 -> y_1\\n ... x_k -> y_k\\nx ->`, followed by the answer ` y`; k cycles
through `data.shots`, so every split holds as many prompts of each k. The task's pairs are split once (by
`data.data_seed`) into query pairs of the test prompts and the rest, which give the training prompts' queries and
every prompt's demonstrations, so no test answer appears in any training prompt. Prompts are tokenized with the
model's own tokenizer (prompt and answer apart, so the answer's tokens are those of ` y`) and right-padded; inputs are
the prompt and the answer but its last token (teacher forcing), targets the answer's tokens at the positions that
predict them (lottery/data/text_task.py scores them by exact match). Everything is a function of the seed.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import torch

from lottery.core.seeds import derive_seed
from lottery.data.splits import Splits
from lottery.data.tasks import IGNORE
from lottery.data.text_task import ExactMatch

WORD_LISTS = Path(__file__).resolve().parent / "word_lists"
TASKS = tuple(sorted(p.stem for p in WORD_LISTS.glob("*.tsv")))


class TextTaskError(ValueError):
    """A text-task setting that cannot work; the message names the value and the fix."""


def read_pairs(task: str) -> list[tuple[str, str]]:
    if task not in TASKS:
        raise TextTaskError(f"data.task={task!r} is not one of the shipped word lists {list(TASKS)}")
    lines = (WORD_LISTS / f"{task}.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines if line and not line.startswith("#")]


def check_text_settings(settings: Any) -> None:
    read_pairs(settings.task)
    if not settings.shots or any(k < 0 for k in settings.shots):
        raise TextTaskError(f"data.shots={list(settings.shots)} must list numbers of demonstrations >= 0, e.g. [0,1,4]")
    if not 0.0 < settings.test_fraction < 1.0:
        raise TextTaskError(f"data.test_fraction={settings.test_fraction} must lie in (0, 1), e.g. 0.3")
    if settings.num_train < 2 or settings.num_test < 1:
        raise TextTaskError(
            f"data.num_train={settings.num_train} must be >= 2 and data.num_test={settings.num_test} >= 1"
        )


def prompt_text(demos: list[tuple[str, str]], query: str) -> str:
    return "".join(f"{x} -> {y}\n" for x, y in demos) + f"{query} ->"


def draw_prompts(
    n: int, queries: list[tuple[str, str]], demos: list[tuple[str, str]], shots: list[int], generator: torch.Generator
) -> list[tuple[str, str, int]]:
    """n (prompt text, answer text, k) triples; the demonstrations never include the query's own pair."""
    out = []
    for i in range(n):
        k = shots[i % len(shots)]
        x, y = queries[int(torch.randint(len(queries), (1,), generator=generator))]
        pool = [p for p in demos if p[0] != x]
        if k > len(pool):
            raise TextTaskError(f"data.shots asks for {k} demonstrations, but the task has {len(pool)} to draw from")
        chosen = [pool[j] for j in torch.randperm(len(pool), generator=generator)[:k].tolist()]
        out.append((prompt_text(chosen, x), f" {y}", k))
    return out


def encode(prompts: list[tuple[str, str, int]], tokenize, pad: int, length: int | None = None):
    """(inputs (n, T) int64, targets (n, T + 1) int64): column T of the targets holds each prompt's k."""
    rows = [(tokenize(p), tokenize(a), k) for p, a, k in prompts]
    if any(not a for _, a, _ in rows):
        raise TextTaskError("an answer tokenized to nothing; the tokenizer does not cover the task's words")
    length = length or max(len(p) + len(a) - 1 for p, a, _ in rows)
    x = torch.full((len(rows), length), pad, dtype=torch.int64)
    y = torch.full((len(rows), length + 1), IGNORE, dtype=torch.int64)
    for i, (p, a, k) in enumerate(rows):
        ids = (p + a)[:-1]
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, len(p) - 1 : len(p) - 1 + len(a)] = torch.tensor(a)
        y[i, length] = k
    return x, y


@cache
def load_tokenizer(path: str):
    """The model's own tokenizer (local files only when `path` is a folder or HF_HUB_OFFLINE=1)."""
    from transformers import AutoTokenizer

    local = Path(path).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") in ("1", "true")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as err:
        raise TextTaskError(
            f"no tokenizer could be loaded from {path!r} ({err}); save the model's tokenizer beside it "
            "(tokenizer.save_pretrained(model.path)) or use a token task such as data=icl_recall"
        ) from None


def load_text(settings: Any) -> Splits:
    check_text_settings(settings)
    tokenizer = load_tokenizer(str(settings.tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    pairs = read_pairs(settings.task)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(derive_seed(settings.data_seed, 0)))
    n_test = max(1, round(settings.test_fraction * len(pairs)))
    test_pairs = [pairs[i] for i in order[:n_test].tolist()]
    train_pairs = [pairs[i] for i in order[n_test:].tolist()]
    shots = list(settings.shots)
    train = draw_prompts(settings.num_train, train_pairs, train_pairs, shots, _gen(settings.data_seed, 1))
    test = draw_prompts(settings.num_test, test_pairs, train_pairs, shots, _gen(settings.data_seed, 2))

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    length = max(len(tokenize(p)) + len(tokenize(a)) - 1 for p, a, _ in train + test)  # one length for both splits
    x_train, y_train = encode(train, tokenize, pad, length)
    x_test, y_test = encode(test, tokenize, pad, length)
    task = ExactMatch(n_answers=len({y for _, y in pairs}))
    return Splits(x_train, y_train, x_test, y_test, num_classes=len(tokenizer), task=task)


def _gen(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream))
