"""Masks: dense masks and counts, compatibility checks, in-place application and masked state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lottery.core.masks import (
    MaskMismatchError,
    apply_,
    check_compatible,
    dense_mask,
    density,
    is_subset,
    layer_of,
    masked_state_dict,
    per_layer_counts,
    prunable_weights,
    remaining,
    total,
)
from lottery.models import MLP, ConvNet


def _weights():
    gen = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=gen), "b.weight": torch.randn(5, generator=gen)}


def test_dense_mask_is_all_true_bool_on_cpu():
    weights = _weights()
    mask = dense_mask(weights)
    assert list(mask) == ["a.weight", "b.weight"]
    for name, m in mask.items():
        assert m.dtype == torch.bool
        assert m.device.type == "cpu"
        assert m.shape == weights[name].shape
        assert bool(m.all())
    assert remaining(mask) == 17
    assert total(mask) == 17
    assert density(mask) == 1.0


def test_counts_of_a_partial_mask():
    mask = {
        "a.weight": torch.tensor([[True, False, True, False], [False, False, False, False], [True, True, True, True]]),
        "b.weight": torch.tensor([False, True, False, False, False]),
    }
    assert remaining(mask) == 7
    assert total(mask) == 17
    assert density(mask) == 7 / 17
    assert per_layer_counts(mask) == {
        "a.weight": {"total": 12, "remaining": 6, "density": 0.5},
        "b.weight": {"total": 5, "remaining": 1, "density": 0.2},
    }


def test_counts_of_an_empty_mask():
    assert remaining({}) == 0
    assert total({}) == 0
    assert density({}) == 0.0


def test_layer_of():
    assert layer_of("fc1.weight") == "fc1"
    assert layer_of("block.0.conv.weight") == "block.0.conv"
    assert layer_of("fc1.bias") == "fc1.bias"


def test_check_compatible_accepts_a_fitting_mask():
    weights = _weights()
    check_compatible(dense_mask(weights), weights)
    check_compatible({"b.weight": torch.ones(5, dtype=torch.bool)}, weights)  # a subset of layers is fine


def test_check_compatible_rejects_unknown_layer():
    weights = _weights()
    mask = dense_mask(weights) | {"fc9.weight": torch.ones(2, dtype=torch.bool)}
    with pytest.raises(MaskMismatchError) as info:
        check_compatible(mask, weights, source="level_3/mask.pt")
    message = str(info.value)
    assert "fc9.weight" in message
    assert "level_3/mask.pt" in message
    assert "a.weight" in message  # lists the model's layers


def test_check_compatible_rejects_shape_mismatch():
    weights = _weights()
    mask = dense_mask(weights)
    mask["a.weight"] = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(MaskMismatchError) as info:
        check_compatible(mask, weights)
    message = str(info.value)
    assert "'a.weight'" in message
    assert "(4, 3)" in message
    assert "(3, 4)" in message


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8, torch.int64])
def test_check_compatible_rejects_non_bool_dtype(dtype):
    weights = _weights()
    mask = dense_mask(weights)
    mask["b.weight"] = torch.ones(5, dtype=dtype)
    with pytest.raises(MaskMismatchError) as info:
        check_compatible(mask, weights)
    message = str(info.value)
    assert "'b.weight'" in message
    assert str(dtype) in message


def test_mask_mismatch_error_is_a_value_error():
    assert issubclass(MaskMismatchError, ValueError)


def test_apply_zeros_exactly_the_masked_entries():
    weights = _weights()
    original = {k: v.clone() for k, v in weights.items()}
    mask = {
        "a.weight": torch.tensor([[True, False, True, False], [False, True, True, True], [True, True, False, True]]),
        "b.weight": torch.tensor([False, True, True, False, True]),
    }
    apply_(weights, mask)
    for name, m in mask.items():
        w = weights[name]
        assert torch.equal(w[~m], torch.zeros(int((~m).sum())))
        # Kept entries are bit-identical (multiplied by exactly 1.0).
        assert torch.equal(w[m].view(torch.int32), original[name][m].view(torch.int32))
        assert int((w != 0).sum()) == int(m.sum())


def test_apply_works_in_place_on_parameters():
    model = MLP((2, 2), 3, [5])
    weights = prunable_weights(model)
    mask = dense_mask(weights)
    mask["fc1.weight"][0] = False
    before = model.fc1.weight.detach().clone()
    apply_(weights, mask)
    assert model.fc1.weight.requires_grad
    assert torch.equal(model.fc1.weight[0], torch.zeros(4))
    assert torch.equal(model.fc1.weight[1:], before[1:])


class _NoMultiply(torch.Tensor):
    """A tensor that fails if anything multiplies it in place."""

    def mul_(self, other):
        raise AssertionError("apply_ multiplied a layer the mask keeps whole")


def test_apply_skips_fully_dense_layers():
    dense = torch.randn(3, 4).as_subclass(_NoMultiply)
    sparse = torch.tensor([1.0, 2.0, 3.0])
    weights = {"a.weight": dense, "b.weight": sparse}
    mask = {"a.weight": torch.ones(3, 4, dtype=torch.bool), "b.weight": torch.tensor([True, False, True])}
    apply_(weights, mask)  # would raise if the dense layer were multiplied
    assert torch.equal(sparse, torch.tensor([1.0, 0.0, 3.0]))


def test_apply_leaves_layers_without_mask_untouched():
    weights = _weights()
    before = weights["a.weight"].clone()
    apply_(weights, {"b.weight": torch.zeros(5, dtype=torch.bool)})
    assert torch.equal(weights["a.weight"], before)
    assert torch.equal(weights["b.weight"], torch.zeros(5))


def test_apply_zeros_masked_non_finite_weights():
    weights = {"w": torch.tensor([float("inf"), float("nan"), 1.0])}
    apply_(weights, {"w": torch.tensor([False, False, True])})
    assert torch.equal(weights["w"], torch.tensor([0.0, 0.0, 1.0]))


def test_masked_state_dict_with_prefix():
    state = {
        "model.fc1.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "model.fc1.bias": torch.tensor([5.0, 6.0]),
    }
    original = {k: v.clone() for k, v in state.items()}
    mask = {"fc1.weight": torch.tensor([[True, False], [False, True]])}
    out = masked_state_dict(state, mask, prefix="model.")
    assert set(out) == set(state)
    assert torch.equal(out["model.fc1.weight"], torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    assert out["model.fc1.bias"] is state["model.fc1.bias"]
    # The input is not modified.
    for key in state:
        assert torch.equal(state[key], original[key])


def test_masked_state_dict_missing_key():
    state = {"fc1.weight": torch.ones(2)}
    with pytest.raises(MaskMismatchError) as info:
        masked_state_dict(state, {"fc1.weight": torch.ones(2, dtype=torch.bool)}, prefix="model.")
    assert "'model.fc1.weight'" in str(info.value)
    assert "'fc1.weight'" in str(info.value)


def test_is_subset():
    outer = {"w": torch.tensor([True, True, False, True])}
    assert is_subset({"w": torch.tensor([True, False, False, True])}, outer)
    assert is_subset(outer, outer)
    assert not is_subset({"w": torch.tensor([False, False, True, False])}, outer)


def test_prunable_weights_of_mlp():
    model = MLP((1, 28, 28), 10, [300, 100])
    weights = prunable_weights(model)
    assert list(weights) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert weights["fc1.weight"] is model.fc1.weight
    assert [tuple(w.shape) for w in weights.values()] == [(300, 784), (100, 300), (10, 100)]
    assert sum(w.numel() for w in weights.values()) == 266200
    assert all(isinstance(w, nn.Parameter) for w in weights.values())


def test_prunable_weights_of_convnet():
    model = ConvNet((1, 8, 8), 10, [64, 128])
    weights = prunable_weights(model)
    assert list(weights) == [
        "conv1.weight",
        "conv2.weight",
        "conv3.weight",
        "conv4.weight",
        "fc1.weight",
        "fc2.weight",
        "fc3.weight",
    ]
    assert weights["conv1.weight"] is model.conv1.weight
    assert tuple(weights["conv1.weight"].shape) == (64, 1, 3, 3)
    assert tuple(weights["conv4.weight"].shape) == (128, 128, 3, 3)
    assert tuple(weights["fc1.weight"].shape) == (256, 128 * 2 * 2)
    assert not any(name.endswith("bias") for name in weights)


def test_prunable_weights_of_1d_convnet_and_skips_norm_layers():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.Flatten(), nn.Linear(4, 3, bias=False))
    assert list(prunable_weights(model)) == ["0.weight", "3.weight"]
    conv = ConvNet((40,), 10, [4], fc=[8])
    assert list(prunable_weights(conv)) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    assert isinstance(conv.conv1, nn.Conv1d)
