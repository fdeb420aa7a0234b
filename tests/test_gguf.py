"""model.gguf_file: a GGUF checkpoint (llama.cpp's format) loaded through transformers' own GGUF support. A tiny Llama
is built with transformers, written to a GGUF file as llama.cpp's converter writes one (its tensor names, its q/k
row order, float32 tensors, a byte-level BPE tokenizer in the metadata), and loaded back through model.path/gguf_file:
the logits are the source model's, the family is read from the header alone, and bad paths are refused by name."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers refuses GGUF files without it

from lottery.models import hf  # noqa: E402
from lottery.models.hf import HFCausalLM, HFModelError, check_model, has_tokenizer  # noqa: E402

NAME = "tiny-llama.F32.gguf"
WORDS = ["cat", "dog", "the", "capital", "Paris"]  # each becomes one token (" cat", ...) through the merges below


def byte_bpe() -> tuple[list[str], list[str]]:
    """A GPT-2-style byte-level BPE vocabulary: the 256 byte symbols, one merge chain per word of WORDS (with its
    leading space, "Ġ"), and an end-of-text control token."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens, merges = list(bytes_to_unicode().values()), []
    for word in WORDS:
        piece = "Ġ"
        for ch in word:
            merges.append(f"{piece} {ch}")
            piece += ch
            tokens.append(piece)
    return [*dict.fromkeys(tokens), "<|endoftext|>"], merges


def permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (rotary halves interleaved), which transformers'
    GGUF loader reverses."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_writer(file: Path, arch: str) -> gguf.GGUFWriter:
    """A float32 GGUF writer of architecture `arch` with the byte-level BPE tokenizer in its metadata."""
    tokens, merges = byte_bpe()
    writer = gguf.GGUFWriter(str(file), arch)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])  # 1 normal, 3 control
    writer.add_token_merges(merges)
    writer.add_eos_token_id(len(tokens) - 1)
    return writer


def finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_llama(file: Path, model) -> None:
    c = model.config
    writer = gguf_writer(file, "llama")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    state = model.state_dict()

    def tensor(name: str, key: str, heads: int = 0) -> None:
        w = state[key].detach().float()
        writer.add_tensor(name, (permute(w, heads) if heads else w).numpy())

    tensor("token_embd.weight", "model.embed_tokens.weight")
    tensor("output_norm.weight", "model.norm.weight")
    tensor("output.weight", "lm_head.weight")
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        tensor(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight")
        tensor(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", c.num_attention_heads)
        tensor(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", c.num_key_value_heads)
        tensor(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight")
        tensor(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight")
        tensor(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight")
        tensor(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight")
        tensor(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight")
        tensor(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight")
    finish(writer)


def write_gpt2(file: Path, model) -> None:
    """GPT-2 as llama.cpp writes it: Conv1D weights transposed to [out, in], q/k/v fused in one tensor."""
    c = model.config
    writer = gguf_writer(file, "gpt2")
    writer.add_context_length(c.n_positions)
    writer.add_block_count(c.n_layer)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(4 * c.n_embd)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(c.layer_norm_epsilon)
    state = model.state_dict()

    def tensor(name: str, key: str, conv1d: bool = False) -> None:
        w = state[key].detach().float()
        writer.add_tensor(name, (w.T.contiguous() if conv1d else w).numpy())

    tensor("token_embd.weight", "transformer.wte.weight")
    tensor("position_embd.weight", "transformer.wpe.weight")
    tensor("output_norm.weight", "transformer.ln_f.weight")
    tensor("output_norm.bias", "transformer.ln_f.bias")
    tensor("output.weight", "lm_head.weight")
    parts = {"attn_norm": "ln_1", "attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_norm": "ln_2"}
    parts |= {"ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}
    for i in range(c.n_layer):
        for name, key in parts.items():
            conv1d = not name.endswith("norm")
            tensor(f"blk.{i}.{name}.weight", f"transformer.h.{i}.{key}.weight", conv1d)
            tensor(f"blk.{i}.{name}.bias", f"transformer.h.{i}.{key}.bias")
    finish(writer)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder holding only the GGUF file, the source transformers model)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokens, _ = byte_bpe()
    # large weights (initializer_range): a wrong q/k row order moves the logits by far more than the tolerance
    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # norms away from one, so a misplaced norm tensor shows in the logits
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("gguf")
    write_llama(folder / NAME, model)
    return folder, model


def test_gguf_logits_equal_the_source_models(tiny):
    folder, source = tiny
    vocab = source.config.vocab_size
    network = HFCausalLM((12,), vocab, str(folder), gguf_file=NAME).eval()
    assert network.family_name == "llama" and network.quantization == "F32"
    assert (network.shape.n_heads, network.shape.n_kv_heads, network.shape.d_ff) == (4, 2, 24)
    x = torch.randint(vocab, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(network(x), source(input_ids=x).logits, rtol=1e-5, atol=1e-5)


def test_a_gguf_file_is_dequantized_once_and_read_back_bit_for_bit(tiny, tmp_path, monkeypatch):
    """The first load dequantizes the GGUF file and saves the model; the second reads those safetensors: the same
    weights and logits bit for bit. A changed file (new modification time) is dequantized again."""
    from lottery.models import dequantized

    monkeypatch.setenv("LOTTERY_MODELS", str(tmp_path / "cache"))
    folder, source = tiny
    first = HFCausalLM((12,), source.config.vocab_size, str(folder), gguf_file=NAME).eval()
    second = HFCausalLM((12,), source.config.vocab_size, str(folder), gguf_file=NAME).eval()
    assert first.loaded_from.startswith("GGUF file") and second.loaded_from.startswith("dequantized copy")
    kept = dequantized.folder_of(dequantized.source_of(folder / NAME, "float32"))
    assert kept.parent == tmp_path / "cache" / ".dequantized" and (kept / "model.safetensors").is_file()
    assert first.state_dict().keys() == second.state_dict().keys()
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())
    x = torch.randint(source.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    assert not list(kept.parent.glob(".tmp-*"))  # written atomically: no temporary folder left
    # a bfloat16 load is another copy, and a touched file is dequantized again
    half = HFCausalLM((12,), source.config.vocab_size, str(folder), gguf_file=NAME, dtype="bfloat16")
    assert half.loaded_from.startswith("GGUF file") and half.lm.dtype == torch.bfloat16
    stat = (folder / NAME).stat()
    os.utime(folder / NAME, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert HFCausalLM((12,), source.config.vocab_size, str(folder), gguf_file=NAME).loaded_from.startswith("GGUF")


def test_gguf_gpt2_logits_equal_the_source_models(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config

    vocab = len(byte_bpe()[0])
    # transformers reads the context length into n_ctx, not n_positions, so only GPT-2's own 1024 positions load
    config = GPT2Config(
        vocab_size=vocab, n_positions=1024, n_embd=16, n_layer=2, n_head=4, initializer_range=0.3,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    source = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # biases away from zero, so a misplaced bias shows in the logits
        for name, p in source.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.3)
    write_gpt2(tmp_path / "gpt2.gguf", source)
    network = HFCausalLM((12,), vocab, str(tmp_path), gguf_file="gpt2.gguf").eval()
    assert network.family_name == "gpt2" and network.shape.d_ff == 64
    x = torch.randint(vocab, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(network(x), source(input_ids=x).logits, rtol=1e-5, atol=1e-5)


def test_gguf_family_is_read_from_the_header_alone(tiny, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("check_model loaded weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", refuse)
    folder, _ = tiny
    start = time.perf_counter()
    assert check_model(str(folder), gguf_file=NAME) == "llama"
    assert time.perf_counter() - start < 1.0
    assert hf.gguf_quantization(str(folder), NAME) == "F32"
    assert has_tokenizer(str(folder), NAME)  # a GGUF file holds its tokenizer; the folder has no tokenizer files


def test_gguf_missing_file_and_non_folder_are_refused(tiny):
    folder, _ = tiny
    with pytest.raises(HFModelError, match=r"model.gguf_file='other.gguf'.*tiny-llama.F32.gguf"):
        check_model(str(folder), gguf_file="other.gguf")
    with pytest.raises(HFModelError, match=rf"model.gguf_file='{NAME}'.*not a folder"):
        check_model(str(folder / NAME), gguf_file=NAME)
    with pytest.raises(HFModelError, match=rf"model.gguf_file='{NAME}'.*not a folder"):
        HFCausalLM((4,), 8, "facebook/opt-125m", gguf_file=NAME)
    with pytest.raises(HFModelError, match=rf"without config.json \(it holds GGUF files: give model.gguf_file={NAME}"):
        check_model(str(folder))  # the folder alone: the error points at model.gguf_file


def test_gguf_architecture_outside_the_families_is_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 2).numpy())
    finish(writer)
    with pytest.raises(HFModelError, match=r"model.gguf_file='m.gguf' holds a 'mamba' model.*llama, gpt2"):
        check_model(str(tmp_path), gguf_file="m.gguf")
    assert hf.gguf_quantization(str(tmp_path), "m.gguf") == "F32"  # no general.file_type: its tensors' type


def test_gguf_tokenizer_loads_and_encodes_a_word(tiny):
    from lottery.data.text_icl import load_tokenizer

    folder, _ = tiny
    tokenizer = load_tokenizer(str(folder), gguf_file=NAME)
    tokens, _ = byte_bpe()
    ids = tokenizer(" cat dog", add_special_tokens=False)["input_ids"]
    assert ids == [tokens.index("Ġcat"), tokens.index("Ġdog")]
    assert tokenizer.decode(ids) == " cat dog"
