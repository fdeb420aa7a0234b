"""The dead-FFN-unit census (lottery/structured/census.py) on tiny saved models with units killed on purpose: SwiGLU
(Llama) and GeGLU (Gemma 3) units whose gate and up rows are zero (exact zeros, or a millionth of a typical
activation), a GeGLU unit whose gate is negative on every token (small, never exactly zero), ReLU units behind a large
negative bias, and a ReLU unit that fires only on the padding token, which a mask must leave out."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import VOCAB, save_model  # noqa: E402

from lottery.models.hf import HFCausalLM  # noqa: E402
from lottery.structured.census import ffn_census  # noqa: E402

PAD = 0


def load(folder) -> HFCausalLM:
    return HFCausalLM((12,), VOCAB, str(folder))  # the identity token map: batches are model token ids


def batches(n: int = 4, size: int = 4, length: int = 12) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(1, VOCAB, (size, length), generator=gen) for _ in range(n)]


def mlp(network: HFCausalLM, layer: int):
    return network.decoder_layers()[layer]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("census") / "llama", "llama")


@pytest.fixture(scope="module")
def opt(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("census") / "opt", "opt")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("census") / "gemma", "gemma3", kv_heads=2)


def kill(network: HFCausalLM, dead: dict[int, list[int]], faint: dict[int, list[int]]) -> None:
    """Gated units whose gate and up rows are zero (`dead`: exactly 0) or a thousandth of what they were (`faint`: a
    millionth of the others, never exactly 0, but dead under the relative rule)."""
    with torch.no_grad():
        for layer, units in dead.items():
            for name in ("gate_proj", "up_proj"):
                getattr(mlp(network, layer).mlp, name).weight[units] = 0.0
        for layer, units in faint.items():
            for name in ("gate_proj", "up_proj"):
                getattr(mlp(network, layer).mlp, name).weight[units] *= 1e-3


def test_swiglu_units_with_zero_rows_are_dead_and_the_rest_alive(llama):
    network = load(llama)
    kill(network, dead={0: [1, 5, 7], 1: [0, 23]}, faint={1: [11]})
    network.train()
    census = ffn_census(network, batches())
    assert network.training  # put back as it was
    assert census["activation"] == "silu(gate) * up" and census["relative"] == 0.01
    assert census["zero_fraction"] is None and "mean |activation|" in census["rule"]
    assert census["tokens"] == 4 * 4 * 12
    assert [r["dead_units"] for r in census["per_layer"]] == [[1, 5, 7], [0, 11, 23]]
    assert [(r["layer"], r["dead"], r["units"]) for r in census["per_layer"]] == [(0, 3, 24), (1, 3, 24)]
    assert census["per_layer"][0]["fraction"] == pytest.approx(3 / 24)
    assert (census["dead_total"], census["units_total"]) == (6, 48)
    assert census["fraction"] == pytest.approx(6 / 48)
    json.dumps(census)  # JSON-friendly as it is

    # a lower bar than the faint unit's activation keeps it alive; the exactly-zero units stay dead under any bar
    strict = ffn_census(network, batches(), relative=1e-9)
    assert [r["dead_units"] for r in strict["per_layer"]] == [[1, 5, 7], [0, 23]]


def test_geglu_units_with_zero_rows_or_a_gate_negative_on_every_token_are_dead(gemma):
    """Gemma 3's FFN unit is gelu_tanh(gate) * up: no ReLU zeros, so the relative rule. Besides zero and faint rows as
    for SwiGLU, layer 1's unit 4 reads a gate between about -4.8 and -3.6 on every token: GELU's negative tail, about a
    thousandth of a typical activation and never exactly 0 (float32's tanh GELU is exactly 0 only below about -5), so
    no count of zeros finds it; the relative rule does."""
    network = load(gemma)
    kill(network, dead={0: [1, 5, 7], 2: [0, 23]}, faint={1: [11]})
    with torch.no_grad():
        # residual coordinate 0 is the same large value for every token (the post-norms keep the layers' additions
        # near 1 per coordinate), so the pre-FFN norm's output there is positive, about 3: unit 4 reads it alone
        network.lm.get_input_embeddings().weight[:, 0] = 3.5
        ffn = mlp(network, 1).mlp
        ffn.gate_proj.weight[4], ffn.up_proj.weight[4] = 0.0, 0.0
        ffn.gate_proj.weight[4, 0], ffn.up_proj.weight[4, 0] = -1.4, 1.0
    seen = []
    handle = ffn.down_proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].reshape(-1, 24)))
    census = ffn_census(network, batches())
    handle.remove()
    act = torch.cat(seen)
    assert (act[:, 4] != 0).all() and act[:, 4].abs().max() < 2e-3 * act.abs().mean()
    assert census["activation"] == "gelu_pytorch_tanh(gate) * up" and census["relative"] == 0.01
    assert census["zero_fraction"] is None and "mean |activation|" in census["rule"]
    assert [r["dead_units"] for r in census["per_layer"]] == [[1, 5, 7], [4, 11], [0, 23]]
    assert (census["dead_total"], census["units_total"]) == (7, 72)
    # a bar below the faint and the negative-gate units' activations keeps them alive; exact zeros stay dead
    strict = ffn_census(network, batches(), relative=1e-9)
    assert [r["dead_units"] for r in strict["per_layer"]] == [[1, 5, 7], [], [0, 23]]


def test_relu_units_behind_a_large_negative_bias_are_dead(opt):
    network = load(opt)
    dead = {0: [2, 3], 1: [10]}
    with torch.no_grad():
        for layer, units in dead.items():
            fc1 = mlp(network, layer).fc1
            # Every other unit fires on every token: at random init the biases dominate the residual stream, so
            # the FFN input barely varies across tokens and a unit with a negative bias could be dead by chance.
            fc1.bias.fill_(1.0)
            fc1.bias[units] = -100.0
    census = ffn_census(network, batches())
    assert census["activation"] == "relu" and census["zero_fraction"] == 0.999 and census["relative"] is None
    assert "exactly 0" in census["rule"]
    assert [r["dead_units"] for r in census["per_layer"]] == [[2, 3], [10]]
    assert [r["dead"] for r in census["per_layer"]] == [2, 1]
    assert (census["dead_total"], census["units_total"]) == (3, 48)


def test_padding_is_left_out_of_the_census_when_masked(opt):
    """Layer 0's unit 5 fires only on the padding token: its embedding is far along a direction v that the unit's
    fc1 row reads, with a bias no real token's normalised hidden state reaches. Counted over real tokens it is dead;
    counted over every token it fires on the padding and is alive."""
    network = load(opt)
    gen = torch.Generator().manual_seed(2)
    v = torch.randn(16, generator=gen)
    v = (v - v.mean()) / (v - v.mean()).norm()  # zero mean, so the layer norm keeps it: LN(50 v) ~ 4 v
    with torch.no_grad():
        network.lm.get_input_embeddings().weight[PAD] = 50.0 * v
        fc1 = mlp(network, 0).fc1
        fc1.bias.fill_(1.0)  # the others fire on every token (see the test above)
        fc1.weight[5], fc1.bias[5] = v, -3.0
    xs = batches()
    for x in xs:
        x[:, -3:] = PAD  # right padding: causal attention keeps it out of the real tokens
    real = [x != PAD for x in xs]

    masked = ffn_census(network, xs, mask=real)
    assert masked["tokens"] == sum(int(m.sum()) for m in real) == 4 * 4 * 9
    assert masked["per_layer"][0]["dead_units"] == [5]

    everything = ffn_census(network, xs)
    assert everything["tokens"] == 4 * 4 * 12
    assert everything["per_layer"][0]["dead_units"] == []
    # zero on 75% of the tokens: alive at the 99.9% bar, dead at a 70% one
    assert ffn_census(network, xs, zero_fraction=0.7)["per_layer"][0]["dead_units"] == [5]

    # one mask for every batch of one shape works as well
    assert ffn_census(network, xs, mask=real[0])["tokens"] == 4 * 4 * 9


def test_bad_masks_are_clear_errors(opt):
    network = load(opt)
    x = batches(n=1)[0]
    with pytest.raises(ValueError, match="mask shape"):
        ffn_census(network, [x], mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no tokens"):
        ffn_census(network, [x], mask=torch.zeros_like(x, dtype=torch.bool))
