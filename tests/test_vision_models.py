"""CIFAR ResNet and VGG: output shapes, exact parameter counts (open_lth's), what is prunable, and bad depths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lottery.core.masks import prunable_weights
from lottery.models import VGG, ResNet
from lottery.models.vgg import PLANS, POOL

CIFAR = (3, 32, 32)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet_count(depth: int, base: int, classes: int = 10, c_in: int = 3) -> int:
    """Parameters of the CIFAR ResNet derived by hand: 3x3 convs without bias, BN (scale and shift) after each,
    1x1 conv + BN shortcuts where a segment starts, a linear head."""
    n = (depth - 2) // 6
    total = c_in * base * 9 + 2 * base  # stem conv + BN
    f_in = base
    for f in (base, 2 * base, 4 * base):
        for _ in range(n):
            total += f_in * f * 9 + 2 * f + f * f * 9 + 2 * f  # conv1 + bn1 + conv2 + bn2
            if f_in != f:
                total += f_in * f + 2 * f  # shortcut conv + BN
            f_in = f
    return total + f_in * classes + classes


def vgg_count(depth: int, classes: int = 10) -> int:
    total, f_in = 0, 3
    for spec in PLANS[depth]:
        if spec != POOL:
            total += f_in * spec * 9 + spec + 2 * spec  # conv with bias + BN
            f_in = spec
    return total + f_in * classes + classes


@pytest.mark.parametrize(
    "depth,width,expected",
    [(20, 1.0, 272_474), (56, 1.0, 855_770), (110, 1.0, 1_730_714), (20, 2.0, 1_084_586), (20, 0.25, 17_534)],
)
def test_resnet_parameter_counts(depth, width, expected):
    model = ResNet(CIFAR, 10, depth=depth, width=width)
    assert count(model) == expected == resnet_count(depth, round(16 * width))


def test_resnet20_shapes_and_prunable_layers():
    model = ResNet(CIFAR, 10, depth=20)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    weights = prunable_weights(model)
    # 19 convs on the main path (stem + 9 blocks x 2), 2 shortcut convs, the linear head; BN is never prunable.
    assert len(weights) == 22 and not any(".bn" in n or n.startswith("bn") for n in weights)
    assert list(weights)[:3] == ["conv.weight", "blocks.0.conv1.weight", "blocks.0.conv2.weight"]
    assert {"blocks.3.shortcut.0.weight", "blocks.6.shortcut.0.weight", "fc.weight"} <= set(weights)
    assert sum(w.numel() for w in weights.values()) == 270_896
    assert weights["blocks.3.conv1.weight"].shape == (32, 16, 3, 3) and weights["fc.weight"].shape == (10, 64)
    assert model.blocks[3].conv1.stride == (2, 2) and model.blocks[3].shortcut[0].stride == (2, 2)
    assert len(model.blocks[0].shortcut) == 0  # identity where the shape does not change


def test_resnet_width_doubles_every_segment():
    model = ResNet(CIFAR, 10, depth=8, width=0.5)
    assert [model.blocks[i].conv1.out_channels for i in range(3)] == [8, 16, 32]


def test_open_lth_initialisation_is_seeded_and_bn_scales_uniform():
    torch.manual_seed(0)
    a = ResNet(CIFAR, 10)
    torch.manual_seed(0)
    b = ResNet(CIFAR, 10)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    bn = a.blocks[0].bn1
    assert bool((bn.weight >= 0).all() and (bn.weight < 1).all()) and bn.weight.std() > 0.1
    assert torch.count_nonzero(bn.bias) == 0
    # Kaiming normal, fan-in, ReLU gain: std sqrt(2 / fan_in) (loose bound: 2304 draws)
    w = a.blocks[0].conv1.weight.detach()
    assert abs(float(w.std()) - (2 / (16 * 9)) ** 0.5) < 0.01


@pytest.mark.parametrize("depth", [7, 19, 21, 2, 0])
def test_resnet_rejects_depths_that_are_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match=rf"model.depth={depth} is not a CIFAR ResNet depth.*6n\+2.*use 20"):
        ResNet(CIFAR, 10, depth=depth)


@pytest.mark.parametrize("depth,expected", [(11, 9_231_114), (13, 9_416_010), (16, 14_728_266), (19, 20_040_522)])
def test_vgg_parameter_counts(depth, expected):
    model = VGG(CIFAR, 10, depth=depth)
    assert count(model) == expected == vgg_count(depth)


def test_vgg16_shapes_and_prunable_layers():
    model = VGG(CIFAR, 10, depth=16, width=0.125)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    weights = prunable_weights(model)
    assert len(weights) == 14  # 13 convs + fc; BN dense
    assert list(weights)[:2] == ["layers.0.conv.weight", "layers.1.conv.weight"] and "fc.weight" in weights
    assert weights["layers.0.conv.weight"].shape == (8, 3, 3, 3) and weights["fc.weight"].shape == (10, 64)


def test_vgg_on_mnist_sized_images_and_too_small_images():
    assert VGG((1, 28, 28), 10, depth=11, width=0.125)(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="8x8 images are too small: it needs at least 16x16"):
        VGG((1, 8, 8), 10, depth=16)


def test_vgg_rejects_unknown_depth():
    with pytest.raises(ValueError, match=r"model.depth=15 is not a VGG depth: use one of \[11, 13, 16, 19\]"):
        VGG(CIFAR, 10, depth=15)


@pytest.mark.parametrize("cls", [ResNet, VGG])
def test_vision_models_reject_vector_inputs(cls):
    with pytest.raises(ValueError, match=r"takes images shaped \(C, H, W\).*\(40,\)"):
        cls((40,), 10)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["model=resnet20", "model.depth=21"], r"model.depth=21 is not a CIFAR ResNet depth"),
        (["model=vgg16", "model.depth=15"], r"model.depth=15 is not a VGG depth"),
    ],
)
def test_a_bad_depth_fails_validation_before_any_data_loads(overrides, match):
    from conftest import compose_config
    from omegaconf import OmegaConf

    from lottery.validate import ConfigError, validate

    with pytest.raises(ConfigError, match=match):
        validate(OmegaConf.to_object(compose_config(overrides)))
