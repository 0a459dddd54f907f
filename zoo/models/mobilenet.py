"""A small MobileNetV2 of the zoo (`zoo.models`) for 8-32 pixel images: a stride-1 3x3 stem,
inverted residual blocks (1x1 expansion -> 3x3 depthwise -> 1x1 linear projection, BatchNorm,
ReLU6, a residual connection where shapes allow), a 1x1 head convolution, global average pooling
and a linear classifier. Fewer blocks and strides than the ImageNet network (three stride-2
stages, so 32x32 inputs end at 4x4); channels are scaled by `width` (default 0.25) and rounded to
multiples of 4."""

from __future__ import annotations

import torch
from torch import nn

from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min, scale_channels
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2", "SMALL_MOBILENETV2_STAGES"]

# (expansion t, output channels c, blocks n, stride of the first block s), as in the paper's table 2
SMALL_MOBILENETV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 2, 2),
    (6, 64, 2, 2),
    (6, 96, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CHANNEL_DIVISOR = 4


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn(in_channels, hidden, 1)
        layers += _conv_bn(hidden, hidden, 3, stride=stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, out_channels, 1, activation=False)  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, width: float = 0.25):
        super().__init__()
        channels = scale_channels(STEM_CHANNELS, width, CHANNEL_DIVISOR)
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, channels, 3))]
        for expansion, out, blocks, stride in SMALL_MOBILENETV2_STAGES:
            out_channels = scale_channels(out, width, CHANNEL_DIVISOR)
            for i in range(blocks):
                layers.append(
                    InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion)
                )
                channels = out_channels
        head_channels = scale_channels(HEAD_CHANNELS, width, CHANNEL_DIVISOR)
        layers.append(nn.Sequential(*_conv_bn(channels, head_channels, 1)))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(head_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, head_channels, H/8, W/8) -> global average pool -> (N, num_outputs)
        return self.head(self.features(x).mean((2, 3)))


@ARCHITECTURES.register("mobilenetv2", inputs=("image",), default_task="shapes")
def mobilenetv2(spec: TaskSpec, width: float = 0.25) -> MobileNetV2:
    """Small MobileNetV2 with channels scaled by `width`."""
    check_min("mobilenetv2", width=(width, 1e-3))
    return MobileNetV2(spec.input_shape[0], spec.num_outputs, width)


def _conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    activation: bool = True,
) -> list[nn.Module]:
    """Conv (no bias) -> BatchNorm [-> ReLU6], with "same" padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if activation:
        layers.append(nn.ReLU6())
    return layers
