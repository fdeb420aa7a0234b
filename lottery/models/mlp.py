"""Fully connected networks: the MNIST-1D MLP and LeNet-300-100 (Frankle & Carbin 2019) are both this class."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def scaled(size: int, width: float) -> int:
    """A layer size times the width multiplier, never below one unit."""
    if width <= 0:
        raise ValueError(f"model.width={width} must be positive (1.0 is the published size)")
    return max(1, round(size * width))


class MLP(nn.Module):
    """Linear layers `fc1 ... fcN` with ReLU between them; the input is flattened."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int], width: float = 1.0):
        super().__init__()
        sizes = [math.prod(input_shape), *(scaled(h, width) for h in hidden), num_classes]
        # Attributes fc1..fcN (not a ModuleList) so layer names read `fc3` in masks, ignore lists and rate overrides.
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            self.add_module(f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.depth:
                x = torch.relu(x)
        return x
