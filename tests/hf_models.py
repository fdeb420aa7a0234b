"""Tiny random-initialised causal LMs of each supported family, built from a config with the library's own classes and
saved with save_pretrained (nothing downloads), and a tiny word-level tokenizer for the text tasks."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 320  # model tokens: enough for the tokenizer below and for the recall tasks of the tests


def config_of(family: str, vocab: int = VOCAB, kv_heads: int = 4):
    import transformers as tf

    common = dict(vocab_size=vocab, max_position_embeddings=128)
    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab, n_positions=128, bos_token_id=0, eos_token_id=0, n_embd=16, n_layer=2, n_head=4,
            n_inner=24,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
    if family == "opt":
        return tf.OPTConfig(
            **common, hidden_size=16, num_hidden_layers=2, ffn_dim=24, num_attention_heads=4,
            word_embed_proj_dim=16, dropout=0.0, attention_dropout=0.0,
        )  # fmt: skip
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            **common, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
            hidden_dropout=0.0, attention_dropout=0.0,
        )  # fmt: skip
    if family == "llama":
        return tf.LlamaConfig(
            **common, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=kv_heads,
        )  # fmt: skip
    if family == "gemma3":
        # Gemma3ForCausalLM (model_type gemma3_text): head_dim 8 (not hidden / heads), GeGLU FFN, q/k norms and norms
        # after attention and FFN, a sliding window of 4 tokens on layers 0 and 2 and full attention on layer 1;
        # kv_heads=2 (or 1) for grouped-query attention, as Gemma 3 has. Large weights (initializer_range), so that
        # RMSNorm's eps (1e-6) is small against the activations: at 0.02 the FFN output's mean square is about eps.
        return tf.Gemma3TextConfig(
            **common, hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=kv_heads, head_dim=8, query_pre_attn_scalar=8, sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"], initializer_range=0.3,
        )  # fmt: skip
    raise ValueError(family)


def save_model(folder: Path, family: str, seed: int = 0, **kwargs) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config_of(family, **kwargs))
    with torch.no_grad():  # biases away from zero, so a test sees what a bias does to a removed unit
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    return folder


def save_tokenizer(folder: Path, words: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["[PAD]", "[UNK]", *words]))}
    assert len(vocab) <= VOCAB, len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
