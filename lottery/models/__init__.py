"""Networks from the lottery-ticket literature, each with a width multiplier so sweeps can range over model size.

Every constructor takes `input_shape` and `num_classes` from the data (passed at build time, not in config) and the
architecture's own settings from `conf/model/*.yaml`.
"""

from lottery.models.conv import ConvNet
from lottery.models.mlp import MLP
from lottery.models.resnet import ResNet
from lottery.models.transformer import Transformer
from lottery.models.vgg import VGG

__all__ = ["MLP", "VGG", "ConvNet", "ResNet", "Transformer"]
