"""open_lth's initialisation of its CIFAR networks, so ResNet and VGG here start from the distribution the
lottery-ticket papers trained from: Kaiming-normal weights for every Conv2d/Linear (fan-in, ReLU gain; biases keep
PyTorch's default) and BatchNorm scales drawn uniformly from [0, 1) with zero shifts (open_lth's
`batchnorm_init='uniform'`).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def open_lth_init(module: nn.Module) -> None:
    """Apply with `model.apply(open_lth_init)`; draws from torch's global RNG, which build_network seeds."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight)
    elif isinstance(module, nn.BatchNorm2d):
        module.weight.uniform_(0.0, 1.0)
        module.bias.zero_()
