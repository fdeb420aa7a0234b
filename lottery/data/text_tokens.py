"""How the text datasets (data=icl_text, data=lm_text) tokenize with a pretrained model's own tokenizer.

Two conventions differ between tokenizers, and getting either wrong feeds the model text it never saw in training:

* BOS: Llama and OPT tokenizers start every text with their BOS token, GPT-2 and SmolLM2 add none. The rule is read
  from what the tokenizer itself does with a probe string (`bos_ids`), not from a list of model families.
* Word boundaries: a sentencepiece-style tokenizer (a Metaspace pre-tokenizer or a Prepend normalizer) tokenizes a
  word at the start of a string differently from the same word after a space, so " cold" tokenized alone is not
  what the model sees after "hot ->". `joint_ids` tokenizes prompt and answer as one string and finds the answer's
  tokens in it.
"""

from __future__ import annotations

from typing import Any

PROBE = "a"  # any short text: only whether the ids lead with BOS is read


class TextTaskError(ValueError):
    """A text-task setting that cannot work; the message names the value and the fix."""


def bos_ids(tokenizer: Any) -> list[int]:
    """[BOS id] when the tokenizer's own convention starts a text with its BOS token (`tokenizer(text)` with
    add_special_tokens=True puts it first and without special tokens does not), else []."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    with_special = tokenizer(PROBE, add_special_tokens=True)["input_ids"]
    plain = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    return [bos] if with_special[:1] == [bos] and plain[:1] != [bos] else []


def pad_id(tokenizer: Any) -> int:
    """The id right-padding fills with; every padded position is unscored, so any id works (EOS, or 0, without one)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def joint_ids(tokenizer: Any, prompt: str, answer: str) -> tuple[list[int], int]:
    """(ids of `prompt + answer` tokenized as one string without special tokens, index of the answer's first token).

    Fast tokenizers: the answer's tokens are those whose character span starts at or after the answer's first
    character. Slow ones (no offsets): the prompt's own ids must be a prefix of the joint ids. A token that covers the
    end of the prompt and the start of the answer at once cannot be scored as the answer: TextTaskError."""
    text, cut = prompt + answer, len(prompt)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, spans = list(encoded["input_ids"]), [tuple(s) for s in encoded["offset_mapping"]]
        first = next((i for i, (start, _) in enumerate(spans) if start >= cut), len(ids))
        bad = [i for i, (start, end) in enumerate(spans) if start < cut < end]
        bad += [i for i in range(first, len(ids)) if spans[i][0] < cut]  # answer tokens must close the text
        if bad:
            _refuse_straddle(tokenizer, prompt, answer, text[spans[bad[0]][0] : spans[bad[0]][1]])
        return ids, first
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    head = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if ids[: len(head)] != head:
        _refuse_straddle(tokenizer, prompt, answer, tokenizer.decode(ids[max(0, len(head) - 1) : len(head) + 1]))
    return ids, len(head)


def _refuse_straddle(tokenizer: Any, prompt: str, answer: str, piece: str) -> None:
    query = prompt.rsplit("\n", 1)[-1].removesuffix(" ->")
    raise TextTaskError(
        f"the tokenizer {type(tokenizer).__name__} merges the end of the prompt {prompt[-12:]!r} and the start of "
        f"the answer {answer!r} into one token ({piece!r}), so the answer of the pair ({query!r}, {answer.strip()!r}) "
        "has no tokens of its own to score; drop that pair from the word list (data.task_file) or use another model"
    )
