"""Structured masks on the transformer: a masked head or MLP unit contributes exactly nothing, unit masks expand to
weight masks and back, the compact model computes what the masked one does, and unit selection is exact."""

from __future__ import annotations

import pytest
import torch

from lottery.core import masks as M
from lottery.core.units import UnitConfigError, contract, expand, full_units, keep_top, random_like
from lottery.models import Transformer
from lottery.structured.export import compact, parameters


def tokens_model(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer((9,), 11, d_model=16, n_layers=3, n_heads=4, d_mlp=12, **kw).eval()


def prompts(n: int = 5, seed: int = 1) -> torch.Tensor:
    return torch.randint(11, (n, 9), generator=torch.Generator().manual_seed(seed))


def shapes_of(model) -> dict[str, tuple[int, ...]]:
    return {n: tuple(w.shape) for n, w in M.prunable_weights(model).items()}


def masked(model: Transformer, units) -> Transformer:
    mask = expand(units, model.layout(), shapes_of(model))
    M.apply_(M.prunable_weights(model), mask)
    return model


def without(model: Transformer, kind: str, *index: int):
    units = full_units(model.layout())
    units[kind][index] = False
    return units


def test_a_masked_head_changes_nothing_once_its_output_projection_is_zero_and_matters_when_unmasked():
    x = prompts()
    original = tokens_model()
    o = original.blocks[1].attn.o.weight
    o_zeroed = tokens_model()
    with torch.no_grad():
        o_zeroed.blocks[1].attn.o.weight[:, 4:8] = 0  # head 1 of layer 1: only its output projection
    fully_masked = masked(tokens_model(), without(original, "heads", 1, 1))  # q, k, v rows and o columns
    with torch.no_grad():
        assert torch.equal(fully_masked(x), o_zeroed(x))  # the q, k, v rows of a head with a zero o slice are inert
        assert not torch.allclose(original(x), fully_masked(x), atol=1e-4)  # the same head, unmasked, matters
        gate = torch.ones(1, 3, 4)
        gate[0, 1, 1] = 0
        gated = original(x, gates={"heads": gate})
        assert torch.allclose(gated, fully_masked(x), atol=1e-6)  # masking is the same as a gate of zero
    assert o.abs().sum() > 0


def test_masked_mlp_units_and_blocks_contribute_exactly_nothing():
    x = prompts()
    with torch.no_grad():
        reference = tokens_model()
        for block in reference.blocks:
            block.mlp.fc_out.weight[:, 3] = 0
        unit_masked = masked(tokens_model(), {"mlp_units": torch.ones(3, 12, dtype=torch.bool)})
        unit_masked = masked(unit_masked, {"mlp_units": torch.arange(12).expand(3, 12) != 3})  # unit 3 everywhere
        assert torch.equal(unit_masked(x), reference(x))
        no_mlp = tokens_model()
        no_mlp.blocks[2].mlp = None  # the block skipped entirely
        block_masked = masked(tokens_model(), without(tokens_model(), "mlp_blocks", 2))
        assert torch.allclose(block_masked(x), no_mlp(x), atol=1e-6)


def test_unit_masks_expand_to_exactly_their_weights_and_contract_back():
    model = tokens_model()
    layout, shapes = model.layout(), shapes_of(model)
    gen = torch.Generator().manual_seed(0)
    units = {k: torch.rand(g, generator=gen) > 0.4 for k, g in layout.grids.items()}
    units["mlp_blocks"][:] = True  # a dead block would also kill its units on the way back (see contract)
    mask = expand(units, layout, shapes)
    dead_heads, dead_units = int((~units["heads"]).sum()), int((~units["mlp_units"]).sum())
    assert M.total(mask) - M.remaining(mask) == dead_heads * 4 * 4 * 16 + dead_units * 2 * 16
    assert set(mask) == set(shapes) and mask["unembed.weight"].all()  # untouched weights stay dense
    back = contract(mask, layout)
    assert all(torch.equal(back[k], units[k]) for k in units)
    units["mlp_blocks"][1] = False  # a removed block removes all of its units
    assert not contract(expand(units, layout, shapes), layout)["mlp_units"][1].any()


@pytest.mark.parametrize("kind", ["tokens", "tied", "vectors"])
def test_the_compact_model_matches_the_masked_model_with_fewer_parameters(kind):
    torch.manual_seed(0)
    if kind == "vectors":
        model, x = Transformer((9, 3), 1, d_model=16, n_layers=3, n_heads=4, d_mlp=12), torch.randn(6, 9, 3)
    else:
        model, x = tokens_model(tied=kind == "tied"), prompts(6)
    model.eval()
    layout = model.layout()
    units = full_units(layout)
    units["heads"][0] = False  # every head of layer 0: its attention goes
    units["heads"][1, [0, 2]] = False
    units["mlp_blocks"][1] = False
    units["mlp_units"][2, [1, 5, 6, 11]] = False
    masked(model, units)
    small, config = compact(model, contract(expand(units, layout, shapes_of(model)), layout))
    assert config["heads_per_layer"] == [0, 2, 4] and config["mlp_per_layer"] == [12, 0, 8]
    assert small.blocks[0].attn is None and small.blocks[1].mlp is None
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-6, rtol=1e-5)
    norm = 2 * 16  # a LayerNorm's weight and bias, gone with the attention of layer 0 and the MLP of layer 1
    heads = 4 * (4 * 16)  # one head: its 4 rows of q, k, v and its 4 columns of o, each of width 16
    removed = 4 * heads + norm + 2 * heads + (2 * 12 * 16 + norm) + 4 * (2 * 16)
    assert parameters(model) - parameters(small) == removed


def test_keep_top_is_exact_breaks_ties_by_position_and_never_revives():
    scores = {"heads": torch.tensor([[3.0, 1.0, 1.0, 2.0], [1.0, 5.0, 0.5, 1.0]])}
    alive = {"heads": torch.tensor([[True, True, True, True], [True, False, True, True]])}
    kept = keep_top(scores, alive, {"heads": 3})["heads"]
    # 5.0 is dead; of the four ties at 1.0 the earliest position is kept
    assert kept.tolist() == [[True, True, False, True], [False, False, False, False]]
    per_layer = keep_top(scores, alive, {"heads": [1, 2]}, scope="layerwise")["heads"]
    assert per_layer.tolist() == [[True, False, False, False], [True, False, False, True]]
    with pytest.raises(UnitConfigError, match="only 7 survive"):
        keep_top(scores, alive, {"heads": 8})


def test_random_units_keep_the_counts_and_depend_only_on_the_generator():
    units = {"heads": torch.tensor([[True, False, False, True], [True, True, True, False]])}
    draw = lambda scope, seed: random_like(units, scope, torch.Generator().manual_seed(seed))["heads"]  # noqa: E731
    assert int(draw("global", 0).sum()) == 5
    assert draw("layerwise", 3).sum(1).tolist() == [2, 3]
    assert torch.equal(draw("global", 7), draw("global", 7))
    assert len({tuple(draw("global", s).flatten().tolist()) for s in range(10)}) > 1
