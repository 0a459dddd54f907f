"""A small DenseNet-BC of the zoo (`zoo.models`), after Huang et al. 2017 (CIFAR variant):
a 3x3 stem with 2 * growth channels, three dense blocks of `block_layers` bottleneck layers
(BN-ReLU-conv1x1 to 4 * growth, BN-ReLU-conv3x3 to growth, concatenated to the input), transitions
(BN-ReLU-conv1x1 compressing channels by half, 2x2 average pool while the map is at least 2x2),
then BN-ReLU, global average pooling and a linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["DenseLayer", "Transition", "DenseNet", "densenet"]

NUM_BLOCKS = 3
BOTTLENECK = 4  # the 1x1 convolution of a dense layer outputs BOTTLENECK * growth channels
COMPRESSION = 0.5


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, BOTTLENECK * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(BOTTLENECK * growth)
        self.conv2 = nn.Conv2d(BOTTLENECK * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, h, w) -> (N, C + growth, h, w)
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, pool: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.relu(self.bn(x)))
        return F.avg_pool2d(x, 2) if self.pool else x


class DenseNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_outputs: int,
        growth: int = 12,
        block_layers: int = 4,
    ):
        super().__init__()
        h, w = image_size
        channels = 2 * growth
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for block in range(NUM_BLOCKS):
            for _ in range(block_layers):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            if block < NUM_BLOCKS - 1:
                out_channels = int(channels * COMPRESSION)
                pool = min(h, w) >= 2
                layers.append(Transition(channels, out_channels, pool))
                channels = out_channels
                if pool:
                    h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, channels, H/4, W/4) -> global average pool -> (N, num_outputs)
        x = F.relu(self.final_bn(self.features(x)))
        return self.head(x.mean((2, 3)))


@ARCHITECTURES.register("densenet", inputs=("image",), default_task="shapes")
def densenet(spec: TaskSpec, growth: int = 12, block_layers: int = 4) -> DenseNet:
    """DenseNet-BC with 3 blocks of `block_layers` layers and growth rate `growth`."""
    check_min("densenet", growth=(growth, 1), block_layers=(block_layers, 1))
    channels, height, width = spec.input_shape
    return DenseNet(channels, (height, width), spec.num_outputs, growth, block_layers)
