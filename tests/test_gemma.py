"""Gemma 3 (Gemma3ForCausalLM, model_type gemma3_text) as a model=hf family, on tiny random models saved with
save_pretrained (tests/hf_models.py: 3 layers of 4 heads with 2 or 4 key/value heads, head_dim 8, a GeGLU FFN of 24
units, a 4-token sliding window on layers 0 and 2 and full attention on layer 1; norm weights set away from their
init) and prompts of 10 tokens, longer than the window. Gemma normalises its attention and FFN outputs again before the
residual stream: a gate of 0 still equals zeroed weights bit for bit through those norms; a skipped layer equals the
model cut to the other layers (their sliding/full pattern kept) and the layer's units zeroed; the FFN-block gate sits
after the post-FFN norm, where a continuous gate and its gradient mean something; the compact export; the GGUF
architecture name; and model=hf end to end on a text task."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import config_of, save_tokenizer  # noqa: E402
from test_hf_units import captured, load, masked, module_names, prompts  # noqa: E402

from lottery.core.units import full_units  # noqa: E402
from lottery.data.tasks import IGNORE  # noqa: E402
from lottery.models.hf import HFModelError, check_model  # noqa: E402
from lottery.structured.census import activation_name  # noqa: E402
from lottery.structured.hf_export import compact_hf  # noqa: E402

LAYERS, HEADS, HEAD_DIM, D_FF = 3, 4, 8, 24
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention"]


def save_gemma(folder, kv_heads: int = 2, seed: int = 0, **config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config_of("gemma3", kv_heads=kv_heads)).eval()
    for key, value in config.items():
        setattr(model.config, key, value)
    with torch.no_grad():  # Gemma's norms start at weight 0 (a scale of 1 + w = 1): move them, so they show
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(-0.5, 0.5)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """{key/value heads: folder}: grouped-query attention (2) and one key/value head per head (4)."""
    root = tmp_path_factory.mktemp("gemma")
    return {kv: save_gemma(root / f"kv{kv}", kv) for kv in (2, 4)}


def ones(**grids):
    return {kind: torch.ones(1, *grid) for kind, grid in grids.items()}


def test_the_unit_layout_is_read_from_a_gemma_model(gemma):
    for kv, owned in ((2, ["q_proj", "o_proj"]), (4, ["q_proj", "k_proj", "v_proj", "o_proj"])):
        net = load(gemma[kv])
        assert net.family_name == "gemma3_text" and net.lm.config.layer_types == LAYER_TYPES
        s = net.shape
        assert (s.n_layers, s.n_heads, s.n_kv_heads, s.head_dim, s.d_ff, s.d_model) == (LAYERS, HEADS, kv, 8, D_FF, 16)
        assert not s.down_bias and not s.o_bias
        layout = net.layout()
        assert layout.grids == {
            "heads": (LAYERS, HEADS),
            "mlp_units": (LAYERS, D_FF),
            "mlp_blocks": (LAYERS,),
            "layers": (LAYERS,),
        }
        # head 2 of layer 1: its query rows (and under one k/v head per head its key and value rows) and its input
        # columns of o_proj, 8 wide: head_dim is Gemma's own, not hidden / heads (16 / 4)
        head = layout.slices["heads"][1 * HEADS + 2]
        assert [x.weight.rsplit(".", 2)[-2] for x in head] == owned
        assert all(x.weight.startswith("lm.model.layers.1.self_attn.") and (x.start, x.stop) == (16, 24) for x in head)
        unit = layout.slices["mlp_units"][2 * D_FF + 5]
        assert [(x.weight.rsplit(".", 2)[-2], x.dim, x.start) for x in unit] == [
            ("gate_proj", 0, 5),
            ("up_proj", 0, 5),
            ("down_proj", 1, 5),
        ]
        assert len(net.prunable_weights()) == LAYERS * 7  # q, k, v, o, gate, up, down; no biases, no norms
        assert activation_name(net.lm.config) == "gelu_pytorch_tanh"


@pytest.mark.parametrize("kv", [2, 4])
def test_a_gated_head_equals_its_output_projection_columns_zeroed(gemma, kv):
    x = prompts()
    ref = load(gemma[kv])
    o = ref.get_submodule(module_names(ref, 1)[0])
    with torch.no_grad():
        o.weight[:, 2 * HEAD_DIM : 3 * HEAD_DIM] = 0
    alive = torch.ones(LAYERS, HEADS, dtype=torch.bool)
    alive[1, 2] = False
    net = masked(load(gemma[kv]), {**full_units(ref.layout()), "heads": alive})
    gates = ones(heads=(LAYERS, HEADS))
    gates["heads"][0, 1, 2] = 0
    with torch.no_grad():
        gated = load(gemma[kv])(x, gates=gates)
        assert torch.equal(gated, ref(x)) and torch.equal(masked_out := net(x), gated)
        assert not torch.equal(load(gemma[kv])(x), masked_out)  # the head did contribute before
    # post_attention_layernorm sees the same vector either way: the other heads' output, re-normalised
    norm = "lm.model.layers.1.post_attention_layernorm"
    assert torch.equal(captured(net, norm, x), captured(ref, norm, x))
    # with every head of the layer removed, the norm's output (the attention's contribution) is exactly zero
    alive[1] = False
    none = masked(load(gemma[kv]), {**full_units(ref.layout()), "heads": alive})
    out = captured(none, norm, x, output=True)
    assert torch.equal(out, torch.zeros_like(out))


def test_gated_ffn_units_and_block_equal_zeroed_weights(gemma):
    x = prompts()
    net = load(gemma[2])
    units = full_units(net.layout())
    units["mlp_units"][0, 5] = False
    units["mlp_blocks"][1] = False
    masked(net, units)
    gates = ones(mlp_units=(LAYERS, D_FF), mlp_blocks=(LAYERS,))
    gates["mlp_units"][0, 0, 5] = 0
    gates["mlp_blocks"][0, 1] = 0
    with torch.no_grad():
        assert torch.equal(load(gemma[2])(x, gates=gates), net(x))
    # the removed block's output is exactly zero before and after post_feedforward_layernorm (RMSNorm of 0 is 0)
    for name in (module_names(net, 1)[1], "lm.model.layers.1.post_feedforward_layernorm"):
        out = captured(net, name, x, output=True)
        assert torch.equal(out, torch.zeros_like(out)), name
    # the removed unit's input to the down-projection is exactly zero
    assert torch.equal(captured(net, module_names(net, 0)[1], x)[..., 5], torch.zeros(3, 10))


@pytest.mark.parametrize("layer", range(LAYERS))
def test_a_skipped_layer_is_the_model_cut_to_the_others_and_its_units_zeroed(gemma, layer):
    x = prompts()
    net = load(gemma[2])
    # the cut model: the layer gone, and its entry gone from layer_types, so each kept layer keeps its attention
    cut = load(gemma[2])
    del cut.decoder_layers()[layer]
    cut.lm.config.num_hidden_layers = LAYERS - 1
    cut.lm.config.layer_types = [t for i, t in enumerate(LAYER_TYPES) if i != layer]
    units = full_units(net.layout())
    units["layers"][layer] = False
    zeroed = masked(load(gemma[2]), units)
    gates = ones(layers=(LAYERS,))
    gates["layers"][0, layer] = 0
    with torch.no_grad():
        skipped = net(x, skip=[layer])
        assert torch.equal(skipped, cut(x))
        assert torch.equal(skipped, zeroed(x))
        # a layer gate of 0 gives the identity exactly, but the kept layers' gates of 1 give x + (y - x): y to rounding
        assert torch.allclose(skipped, net(x, gates=gates), rtol=0, atol=1e-5)
        assert not torch.equal(skipped, net(x))
        # cut without its layer_types, a kept layer would attend with the removed one's window: a different model
        if LAYER_TYPES[layer] != LAYER_TYPES[-1]:
            cut.lm.config.layer_types = LAYER_TYPES[: LAYERS - 1]
            assert not torch.allclose(cut(x), skipped, atol=1e-4)


def test_the_ffn_block_gate_sits_after_the_post_ffn_norm(gemma):
    """The norm after the down-projection undoes any common scale of its input: a gate there would leave the model
    unchanged for every value above 0 (but for eps) and have a gradient of ~0. After the norm the gate scales what the
    block adds to the residual stream, and its gradient is the finite difference of the loss."""
    x = prompts(1)
    net = load(gemma[2]).double()
    assert net.family.ffn_out == "post_feedforward_layernorm"
    with torch.no_grad():
        dense = net(x)
        down = net.get_submodule(module_names(net, 1)[1])
        handle = down.register_forward_hook(lambda m, a, out: 0.5 * out)
        before_norm = net(x)
        handle.remove()
        gates = torch.ones(1, LAYERS, dtype=torch.float64)
        gates[0, 1] = 0.5
        after_norm = net(x, gates={"mlp_blocks": gates})
    assert torch.allclose(before_norm, dense, rtol=0, atol=1e-5)
    assert (after_norm - dense).abs().max() > 1e-2

    target = torch.randint(12, (1, 10), generator=torch.Generator().manual_seed(3))

    def loss(g, kind="mlp_blocks"):
        return torch.nn.functional.cross_entropy(net(x, gates={kind: g})[0], target[0])

    g = torch.ones(1, LAYERS, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(g), g)
    eps = 1e-2  # Gemma's RMSNorm computes in float32 whatever the model's dtype: a step well above its rounding
    for layer in range(LAYERS):
        step = torch.zeros_like(g)
        step[0, layer] = eps
        with torch.no_grad():
            fd = (loss(g + step) - loss(g - step)) / (2 * eps)
        assert float(grad[0, layer]) == pytest.approx(float(fd), rel=1e-3, abs=1e-6)
    assert grad.abs().min() > 1e-3
    # heads are gated before post_attention_layernorm (as for Llama): scaling all of a layer's heads together changes
    # nothing, so their gradients in one layer sum to ~0, while each alone is not ~0
    h = torch.ones(1, LAYERS, HEADS, dtype=torch.float64, requires_grad=True)
    (hgrad,) = torch.autograd.grad(loss(h, "heads"), h)
    assert (hgrad[0].sum(-1).abs() < 1e-4 * hgrad[0].abs().sum(-1)).all()
    assert (hgrad[0].abs() > 1e-4).all()


@pytest.mark.parametrize("kv", [2, 4])
def test_the_compact_export_gives_the_masked_outputs(gemma, kv):
    x = prompts(4)
    net = load(gemma[kv])
    units = full_units(net.layout())
    units["heads"][0] = False
    units["heads"][1, 2] = False
    units["mlp_units"][0, 3:9] = False
    units["mlp_blocks"][1] = False
    masked(net, units)
    small, config = compact_hf(net, units)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), net(x), rtol=0, atol=1e-6)
    assert config["mlp_per_layer"] == [18, 0, 24]
    # heads are cut out with one key/value head per head (the q/k norms are per head_dim, shared by all heads), and
    # only masked under grouped-query attention; a Gemma attention runs with no heads at all
    assert config["heads_cut"] == (kv == 4)
    assert config["heads_per_layer"] == ([0, 3, 4] if kv == 4 else [4, 4, 4])


def test_scored_position_logits_and_a_capped_model_is_refused(gemma, tmp_path):
    net = load(gemma[2])
    x = prompts()
    at = torch.zeros_like(x, dtype=torch.bool)
    at[:, 5:] = True
    with torch.no_grad():
        assert torch.allclose(net(x, at=at), net(x)[at], rtol=0, atol=1e-6)
    with pytest.raises(HFModelError, match="final_logit_softcapping=30.0"):
        load(save_gemma(tmp_path / "capped", final_logit_softcapping=30.0))


def test_a_gemma3_gguf_file_is_read_as_gemma3_text(tmp_path):
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gemma3")  # llama.cpp's name for Gemma 3's text model
    writer.add_tensor("token_embd.weight", torch.zeros(4, 2).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert check_model(str(tmp_path), gguf_file="g.gguf") == "gemma3_text"


def test_model_hf_runs_a_text_task_to_its_report(run_tiny, tmp_path):
    from lottery.data.text_icl import read_pairs

    folder = save_gemma(tmp_path / "gemma")
    save_tokenizer(folder, ["->", *(w for pair in read_pairs("antonyms") for x in pair for w in x.split())])
    _, seed_dir = run_tiny(
        "model=hf",
        f"model.path={folder}",
        "data=icl_text",
        "data.task=antonyms",
        "data.num_train=120",
        "data.num_test=40",
        "data.val_size=40",
        "pruning.strategy=structured",
        "structured.procedure=no_retrain",
        "structured.grid=[0.5]",
        "structured.random_draws=1",
        "structured.score_examples=8",
        "structured.grid_units=[heads,mlp_blocks,layers]",
        "structured.bootstrap=200",
    )
    results = json.loads((seed_dir / "no_retrain" / "results.json").read_text())
    assert results["totals"]["heads"] == LAYERS * HEADS and results["totals"]["mlp_blocks"] == LAYERS
    assert [r["layer"] for r in results["layer_removal"]] == [0, 1, 2]
    assert results["census"]["activation"] == "gelu_pytorch_tanh(gate) * up"
    assert results["census"]["units_total"] == LAYERS * D_FF
    assert (seed_dir / "structured.json").is_file()


def test_the_layer_scan_equals_removing_each_layer_alone_under_sliding_windows(gemma):
    """Probe.layer_scan on Gemma 3 (sliding-window and global layers, two rotary tables) gives the separate passes'
    results bit for bit."""
    from lottery.data.text_task import ExactMatch
    from lottery.structured.probe import Probe, Prompts

    x = prompts()
    targets = torch.full_like(x, IGNORE)
    targets[:, -3:] = x[:, -3:] % 7
    probe = Probe(load(gemma[2]), ExactMatch(7), torch.device("cpu"), batch_size=2)
    test = Prompts(x, targets, None)
    scan = probe.layer_scan(test)
    for i in range(LAYERS):
        assert scan[i] == probe.evaluate(test, {"layers": torch.arange(LAYERS) == i}), i
