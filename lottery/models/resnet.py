"""The CIFAR ResNet of He et al. 2016 in open_lth's form (`cifar_resnet_<depth>`), as used by the LMC paper.

A 3x3 stem convolution, three segments of n residual blocks with 16, 32 and 64 channels (times `width`), global
average pooling and a linear head: depth = 6n + 2 layers with weights (ResNet-20: n = 3, about 0.27M parameters).
Each block is conv-BN-ReLU-conv-BN plus a shortcut, then ReLU; the first block of segments 2 and 3 halves the
resolution with stride 2, and its shortcut is a strided 1x1 convolution with BN (open_lth's choice, not the
parameter-free padding shortcut of the original paper). Convolutions have no bias (BN follows them).

Module and parameter names are open_lth's (`conv`, `bn`, `blocks.<i>.conv1`, `blocks.<i>.shortcut.0`, `fc`), so
its checkpoints' state dicts load here and masks name layers the same way. Every Conv2d/Linear weight is prunable;
BatchNorm stays dense (lottery/core/masks.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lottery.models.init import open_lth_init
from lottery.models.mlp import scaled

FIRST_SEGMENT_CHANNELS = 16  # segments 2 and 3 have 2x and 4x this (open_lth's W in cifar_resnet_<depth>_<W>)


class Block(nn.Module):
    def __init__(self, f_in: int, f_out: int, downsample: bool) -> None:
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(f_in, f_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        # An empty Sequential is the identity; a projection only where the shape changes.
        self.shortcut = nn.Sequential()
        if downsample or f_in != f_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(f_in, f_out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(f_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def blocks_per_segment(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"model.depth={depth} is not a CIFAR ResNet depth: it must be 6n+2 with n >= 1 blocks per segment "
            "(8, 14, 20, 32, 44, 56, 110, ...); use 20 for ResNet-20"
        )
    return (depth - 2) // 6


class ResNet(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 20, width: float = 1.0) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"ResNet takes images shaped (C, H, W), but the data's examples are shaped {tuple(input_shape)}; "
                "use an image dataset (cifar10, synthetic_cifar10, mnist) or a model for vectors (mlp)"
            )
        n = blocks_per_segment(depth)
        base = scaled(FIRST_SEGMENT_CHANNELS, width)
        self.conv = nn.Conv2d(input_shape[0], base, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(base)
        blocks, current = [], base
        for segment, filters in enumerate((base, 2 * base, 4 * base)):
            for index in range(n):
                blocks.append(Block(current, filters, downsample=segment > 0 and index == 0))
                current = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(current, num_classes)
        self.apply(open_lth_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        # Global average pooling as a mean: equal to open_lth's avg_pool2d over the whole map, and, unlike
        # adaptive_avg_pool2d, its backward has a deterministic CUDA kernel (trainer.deterministic=true allows it).
        return self.fc(out.mean(dim=(2, 3)))
