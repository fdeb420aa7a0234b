"""A character tokenizer built from the text itself, for language models trained from scratch (model=transformer
data=lm_text data.tokenizer=chars): every distinct character of the file is a token, in sorted order after PAD (0)
and BOS (1). A pretrained tokenizer's vocabulary (49,152 tokens for SmolLM2) would put nearly all of a small model's
parameters in its embedding; characters keep the embedding a rounding error, so the parameters that scale with a
model's width and depth are the ones a tokens-per-parameter axis counts. Deterministic: the same file gives the same
ids on every machine.

It answers the calls lottery/data/lm_text.py makes of a transformers tokenizer: tokenizer(text, add_special_tokens)
-> {"input_ids": [...]}, len(tokenizer), bos_token_id, pad_token_id, eos_token_id.
"""

from __future__ import annotations

from pathlib import Path

NAME = "chars"  # data.tokenizer=chars
PAD, BOS = 0, 1


class Characters:
    pad_token_id, bos_token_id, eos_token_id = PAD, BOS, None

    def __init__(self, alphabet: str) -> None:
        self.alphabet = "".join(sorted(set(alphabet)))
        self.ids = {c: i + 2 for i, c in enumerate(self.alphabet)}

    @classmethod
    def of(cls, path: str) -> Characters:
        return cls(Path(path).expanduser().read_text(encoding="utf-8"))

    def __len__(self) -> int:
        return len(self.alphabet) + 2

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        missing = sorted(set(text) - self.ids.keys())
        if missing:
            raise ValueError(f"characters {missing[:5]} are not in the alphabet built from the text")
        return {"input_ids": ([BOS] if add_special_tokens else []) + [self.ids[c] for c in text]}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i - 2] for i in ids if i >= 2)
