"""Conv-2/4/6 of Frankle & Carbin 2019: blocks of two 3x3 convolutions and a max-pool, then fully connected layers.

`blocks=[64]` is Conv-2, `[64, 128]` Conv-4 and `[64, 128, 256]` Conv-6, with `fc=[256, 256]`. Inputs of shape
`(L,)` or `(C, L)` (MNIST-1D) use 1-d convolutions, `(C, H, W)` images 2-d ones, so the same family serves both.
Layers are attributes `conv1..convN`, `fc1..fcM` so masks and config patterns (`conv*`, `fc3`) name them plainly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lottery.models.mlp import scaled


class ConvNet(nn.Module):
    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        blocks: Sequence[int] = (64, 128),
        fc: Sequence[int] = (256, 256),
        width: float = 1.0,
    ):
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) == 1:
            shape = (1, *shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"ConvNet takes inputs shaped (L,), (C, L) or (C, H, W); got {tuple(input_shape)}")
        self.input_shape = shape
        conv = nn.Conv1d if len(shape) == 2 else nn.Conv2d
        self._pool = F.max_pool1d if len(shape) == 2 else F.max_pool2d
        channels, spatial = shape[0], list(shape[1:])
        self.pool_after: set[int] = set()  # indices of convs followed by a 2x max-pool
        n = 0
        for out in blocks:
            out = scaled(out, width)
            for _ in range(2):
                n += 1
                self.add_module(f"conv{n}", conv(channels, out, kernel_size=3, padding=1))
                channels = out
            if min(spatial) >= 2:  # small inputs (8x8 digits under Conv-6) run out of room to pool
                self.pool_after.add(n)
                spatial = [s // 2 for s in spatial]
        self.num_convs = n
        sizes = [channels * math.prod(spatial), *(scaled(h, width) for h in fc), num_classes]
        self.num_fcs = len(sizes) - 1
        for i in range(self.num_fcs):
            self.add_module(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        for i in range(1, self.num_convs + 1):
            x = torch.relu(getattr(self, f"conv{i}")(x))
            if i in self.pool_after:
                x = self._pool(x, 2)
        x = x.flatten(1)
        for i in range(1, self.num_fcs + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.num_fcs:
                x = torch.relu(x)
        return x
