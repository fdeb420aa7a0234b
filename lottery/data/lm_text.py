"""Language modelling on plain text (data=lm_text): the next-token loss and accuracy of a pretrained model on a text
file, with the model's own tokenizer, e.g. on the children's stories shipped for tests and examples:

    lottery model=hf model.path=../shared/models/stories260K-hf data=lm_text \\
        data.path=lottery/data/samples/stories.txt pruning.strategy=structured structured.procedure=no_retrain

The file's documents are separated by blank lines. Each is tokenized alone, BOS first where the tokenizer's own
convention puts one (lottery/data/text_tokens.py), and cut into windows of at most `data.context` tokens that overlap
by one token, so every token but a document's first is predicted exactly once (non-overlapping windows would leave
each window's first token unpredicted). Windows are right-padded to the longest. Documents, not windows, are split
into train and test (`data.test_fraction`, seeded by `data.data_seed`), so no test text is seen in training;
`data.num_test` caps the test windows. Targets are the next tokens (lottery/data/lm_task.py scores them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lottery.core.seeds import derive_seed
from lottery.data.char_tokens import NAME as CHARS
from lottery.data.char_tokens import Characters
from lottery.data.lm_task import NextToken
from lottery.data.splits import Splits
from lottery.data.tasks import IGNORE
from lottery.data.text_tokens import TextTaskError, bos_ids, pad_id

SAMPLE = Path(__file__).resolve().parent / "samples" / "stories.txt"  # written for this package
BLANK_LINE = re.compile(r"\n[ \t]*\n")


def read_documents(path: str) -> list[str]:
    """The documents of a text file: blocks separated by blank lines, stripped, empty ones dropped."""
    file = Path(path).expanduser()
    if not path or not file.is_file():
        raise TextTaskError(
            f"data.path={path!r} is not a file{'' if not path else f' (looked for {file.resolve()})'}; data=lm_text "
            "reads a plain text file with documents separated by blank lines: set data.path=<file>, e.g. "
            f"data.path={SAMPLE}"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TextTaskError(f"data.path={path!r} is not UTF-8 text ({err}); save it as UTF-8") from None
    return [doc.strip() for doc in BLANK_LINE.split(text.replace("\r\n", "\n")) if doc.strip()]


def check_lm_settings(settings: Any) -> None:
    """Also run by lottery.validate, so a missing file or a bad value is refused before any weights load."""
    if not settings.tokenizer:
        raise TextTaskError(
            "data=lm_text is tokenized by a pretrained model's tokenizer and data.tokenizer is empty (it follows "
            "model.path); use model=hf model.path=<folder or hub id>, or data.tokenizer=chars (the text's own "
            "characters) for a model trained from scratch (model=transformer)"
        )
    if settings.context < 2:
        raise TextTaskError(f"data.context={settings.context} must be >= 2 tokens (a token and the next), e.g. 128")
    if not 0.0 < settings.test_fraction < 1.0:
        raise TextTaskError(f"data.test_fraction={settings.test_fraction} must lie in (0, 1), e.g. 0.2")
    if settings.num_test < 1:
        raise TextTaskError(f"data.num_test={settings.num_test} must be >= 1 test windows")
    docs = read_documents(settings.path)
    if len(docs) < 2:
        raise TextTaskError(
            f"data.path={settings.path!r} holds {len(docs)} document(s); train and test need one each at least: "
            "separate the documents with blank lines"
        )


def windows(ids: list[int], context: int) -> list[list[int]]:
    """Windows of at most `context` tokens, each starting at the previous one's last token, so each token after the
    first is a target exactly once; a window needs two tokens to hold a target."""
    step = context - 1
    return [ids[start : start + context] for start in range(0, max(len(ids) - 1, 0), step)]


def encode_windows(rows: list[list[int]], pad: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (n, length) int64, targets (n, length) int64): targets[:, t] = inputs[:, t + 1], IGNORE at padding and
    at each window's last token."""
    x = torch.full((len(rows), length), pad, dtype=torch.int64)
    y = torch.full((len(rows), length), IGNORE, dtype=torch.int64)
    for i, ids in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(ids) - 1] = torch.tensor(ids[1:])
    return x, y


def load_lm(settings: Any) -> Splits:
    from lottery.data.text_icl import load_tokenizer  # transformers: imported on this path only

    check_lm_settings(settings)
    if settings.tokenizer == CHARS:  # a model from scratch: the text's own characters (lottery/data/char_tokens.py)
        tokenizer = Characters.of(settings.path)
    else:
        tokenizer = load_tokenizer(str(settings.tokenizer), getattr(settings, "tokenizer_gguf", None))
    docs = read_documents(settings.path)
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(derive_seed(settings.data_seed, 0)))
    n_test = max(1, min(len(docs) - 1, round(settings.test_fraction * len(docs))))
    bos = bos_ids(tokenizer)

    def cut(indices: list[int]) -> list[list[int]]:
        ids = (bos + tokenizer(docs[i], add_special_tokens=False)["input_ids"] for i in indices)
        return [w for doc in ids for w in windows(doc, settings.context)]

    test = cut(order[:n_test].tolist())[: settings.num_test]
    train = cut(order[n_test:].tolist())
    if not train or not test:
        raise TextTaskError(
            f"data.path={settings.path!r} gives {len(train)} training and {len(test)} test windows; every document "
            "tokenized to fewer than two tokens: give longer documents"
        )
    length = max(len(w) for w in train + test)  # one width for both splits, at most data.context
    x_train, y_train = encode_windows(train, pad_id(tokenizer), length)
    x_test, y_test = encode_windows(test, pad_id(tokenizer), length)
    task = NextToken(vocab=len(tokenizer), name=Path(settings.path).stem)
    return Splits(x_train, y_train, x_test, y_test, num_classes=len(tokenizer), task=task)
