"""Heads, FFN units and FFN blocks of pretrained Hugging Face LMs (model=hf), on tiny random-initialised models of each
family saved with save_pretrained and loaded through model.path: a masked unit contributes exactly zero, the gates
are the masks' continuous form, and the compact export computes what the masked model does."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import save_model  # noqa: E402

from lottery.core import masks as M  # noqa: E402
from lottery.core.units import expand, full_units  # noqa: E402
from lottery.models.hf import HFCausalLM  # noqa: E402
from lottery.structured.hf_export import compact_hf  # noqa: E402

FAMILIES = ("gpt2", "opt", "gpt_neox", "llama")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {f: save_model(root / f, f) for f in FAMILIES}


def load(folder, **kwargs):
    return HFCausalLM((10,), 12, str(folder), token_offset=5, **kwargs).eval()


def prompts(n=3):
    return torch.randint(12, (n, 10), generator=torch.Generator().manual_seed(0))


def masked(network, units):
    shapes = {n: tuple(w.shape) for n, w in M.prunable_weights(network).items()}
    M.apply_(M.prunable_weights(network), expand(units, network.layout(), shapes))
    return network


def captured(network, module_name, x, output=False):
    """The input (or output) of one of the library's modules during a forward pass."""
    seen = {}
    module = network.get_submodule(module_name)
    if output:
        handle = module.register_forward_hook(lambda m, a, out: seen.update(t=out.detach().clone()))
    else:
        handle = module.register_forward_pre_hook(lambda m, a: seen.update(t=a[0].detach().clone()))
    with torch.no_grad():
        network(x)
    handle.remove()
    return seen["t"]


def module_names(network, layer):
    f = network.family
    base = f"lm.{f.layers}.{layer}."
    return base + f.o, base + f.down


@pytest.mark.parametrize("family", FAMILIES)
def test_a_masked_head_is_the_head_with_its_output_projection_columns_zeroed(folders, family):
    x = prompts()
    net = masked(load(folders[family]), {**full_units(load(folders[family]).layout()), "heads": _one_off((2, 4), 1, 2)})
    # the reference: the library's model with only that head's input columns of the output projection set to zero
    ref = load(folders[family])
    o = ref.get_submodule(module_names(ref, 1)[0])
    dh = ref.shape.head_dim
    with torch.no_grad():
        if ref.family.conv1d:
            o.weight[2 * dh : 3 * dh, :] = 0  # Conv1D: weight [in, out]
        else:
            o.weight[:, 2 * dh : 3 * dh] = 0
        assert torch.equal(net(x), ref(x))
        gates = torch.ones(1, 2, 4)
        gates[0, 1, 2] = 0
        assert torch.equal(load(folders[family])(x, gates={"heads": gates}), net(x))
        assert not torch.equal(load(folders[family])(x), net(x))  # the head did contribute before
    # the head's own contribution through the output projection is exactly zero
    name = module_names(net, 1)[0]
    inputs = captured(net, name, x)
    only = torch.zeros_like(inputs)
    only[..., 2 * dh : 3 * dh] = inputs[..., 2 * dh : 3 * dh]
    module = net.get_submodule(name)
    bias = module.bias if module.bias is not None else torch.zeros(net.shape.d_model)
    with torch.no_grad():
        assert torch.equal(module(only), bias.expand_as(module(only)))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_masked_ffn_unit_and_block_contribute_exactly_zero(folders, family):
    x = prompts()
    net = load(folders[family])
    units = full_units(net.layout())
    units["mlp_units"][0, 5] = False
    units["mlp_blocks"][1] = False
    masked(net, units)
    down0, down1 = module_names(net, 0)[1], module_names(net, 1)[1]
    inputs = captured(net, down0, x)
    only = torch.zeros_like(inputs)
    only[..., 5] = inputs[..., 5]
    module = net.get_submodule(down0)
    bias = module.bias if module.bias is not None else torch.zeros(net.shape.d_model)
    with torch.no_grad():
        assert torch.equal(module(only), bias.expand_as(module(only)))
    out = captured(net, down1, x, output=True)  # the whole block, bias included, adds nothing
    assert torch.equal(out, torch.zeros_like(out))
    gates = {"mlp_units": torch.ones(1, 2, 24), "mlp_blocks": torch.ones(1, 2)}
    gates["mlp_units"][0, 0, 5] = 0
    gates["mlp_blocks"][0, 1] = 0
    with torch.no_grad():
        assert torch.equal(load(folders[family])(x, gates=gates), net(x))


def test_grouped_query_heads_own_their_query_rows_and_output_columns_only(tmp_path):
    net = load(save_model(tmp_path / "gqa", "llama", kv_heads=2))
    head = net.layout().slices["heads"][0]
    assert [s.weight.rsplit(".", 2)[-2] for s in head] == ["q_proj", "o_proj"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_compact_export_removes_units_and_gives_the_masked_outputs(folders, family):
    x = prompts(4)
    net = load(folders[family])
    units = full_units(net.layout())
    units["heads"][0] = False  # a layer without heads
    units["heads"][1, 2] = False
    units["mlp_units"][0, 3:9] = False
    units["mlp_blocks"][1] = False  # a layer without its FFN
    masked(net, units)
    small, config = compact_hf(net, units)
    with torch.no_grad():
        expected, got = net(x), small.eval()(x)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    assert config["heads_per_layer"] == [0, 3] and config["mlp_per_layer"] == [18, 0]
    o = small.get_submodule(module_names(small, 1)[0])
    assert (o.weight.shape[0] if small.family.conv1d else o.weight.shape[1]) == 3 * net.shape.head_dim
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())


def _one_off(grid, layer, head):
    alive = torch.ones(grid, dtype=torch.bool)
    alive[layer, head] = False
    return alive
