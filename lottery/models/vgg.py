"""CIFAR VGG-11/13/16/19 with batch norm in open_lth's form (`cifar_vgg_<depth>`), as used by the LMC paper.

3x3 convolutions (with bias) each followed by BN and ReLU, a 2x2 max-pool after each stage but the last, then the
average of the final feature map and one linear layer from 512 channels (times `width`) to the classes. On 32x32
images the last map is 2x2, so the average is open_lth's AvgPool2d(2). VGG-16 has about 14.7M parameters.

Names are open_lth's (`layers.<i>.conv`, `layers.<i>.bn`, `fc`; pools hold an index in `layers` but no
parameters), so its checkpoints load here. open_lth leaves `fc.weight` unpruned for VGG (`pruning.ignore=[fc]`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lottery.models.init import open_lth_init
from lottery.models.mlp import scaled

POOL = "M"
PLANS: dict[int, list[int | str]] = {  # channels of each conv, "M" a max-pool (open_lth's cifar_vgg plans)
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512],
    19: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512],
}


class ConvModule(nn.Module):
    def __init__(self, f_in: int, f_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(f_in, f_out, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(f_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class VGG(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 16, width: float = 1.0) -> None:
        super().__init__()
        if depth not in PLANS:
            raise ValueError(f"model.depth={depth} is not a VGG depth: use one of {sorted(PLANS)} (VGG-16: 16)")
        if len(input_shape) != 3:
            raise ValueError(
                f"VGG takes images shaped (C, H, W), but the data's examples are shaped {tuple(input_shape)}; "
                "use an image dataset (cifar10, synthetic_cifar10, mnist) or a model for vectors (mlp)"
            )
        pools = PLANS[depth].count(POOL)
        if min(input_shape[1:]) < 2**pools:
            raise ValueError(
                f"VGG-{depth} halves the image {pools} times, so {input_shape[1]}x{input_shape[2]} images are too "
                f"small: it needs at least {2**pools}x{2**pools} (CIFAR-10 is 32x32)"
            )
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for spec in PLANS[depth]:
            if spec == POOL:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(ConvModule(channels, scaled(spec, width)))
                channels = scaled(spec, width)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        self.apply(open_lth_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The mean over the final map (2x2 on CIFAR) is open_lth's AvgPool2d(2) there, and works for larger images.
        return self.fc(self.layers(x).mean(dim=(2, 3)))
