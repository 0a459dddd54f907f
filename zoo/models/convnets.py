"""The small convnets of the weight-prediction papers (`zoo.models`).

- `wnn-cnn`: the WNN paper's "vanilla CNN": four 3x3 convolutions with 8, 16, 32, 32 channels,
  flatten, a 64-unit fully connected layer and a classifier. Each convolution is followed by ReLU
  and a 2x2 max pool while the feature map is at least 2x2 (32x32 inputs end at 32x2x2).
- `nino-cnn` / `nino-cnn-wide`: NiNo's vision-task networks (FM/16, C10/16 and the wider
  FM/32, C10/32): 3x3 convolutions with 16, 32, 32 (wide: 32, 64, 64) channels and ReLU, the first
  with stride 2 and no padding, the others stride 1 with "same" padding; global average pooling and
  a linear classifier, as in the authors' `utils/vision.py` (14,378 parameters on 1x28x28, 10
  classes)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["WNNCNN", "NiNoCNN", "wnn_cnn", "nino_cnn", "nino_cnn_wide"]


class WNNCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_outputs: int,
        channels: Sequence[int] = (8, 16, 32, 32),
        hidden: int = 64,
    ):
        super().__init__()
        h, w = image_size
        layers: list[nn.Module] = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
            # Pool only while it leaves at least one pixel, so 8x8 inputs work too.
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, 32, h, w) -> (N, num_outputs)
        return self.classifier(self.features(x).flatten(1))


class NiNoCNN(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, channels: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, out_channels in enumerate(channels):
            conv = (
                nn.Conv2d(in_channels, out_channels, 3, stride=2)
                if i == 0
                else nn.Conv2d(in_channels, out_channels, 3, padding=1)
            )
            layers += [conv, nn.ReLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, channels[-1], h, w) -> global average pool (N, channels[-1])
        return self.head(self.features(x).mean((2, 3)))


@ARCHITECTURES.register("wnn-cnn", inputs=("image",), default_task="shapes")
def wnn_cnn(spec: TaskSpec) -> WNNCNN:
    """The WNN paper's vanilla CNN (conv 8-16-32-32, FC 64)."""
    channels, height, width = spec.input_shape
    return WNNCNN(channels, (height, width), spec.num_outputs)


@ARCHITECTURES.register("nino-cnn", inputs=("image",), default_task="shapes")
def nino_cnn(spec: TaskSpec) -> NiNoCNN:
    """NiNo's small convnet (conv 16-32-32, global pooling, linear)."""
    return _nino(spec, (16, 32, 32))


@ARCHITECTURES.register("nino-cnn-wide", inputs=("image",), default_task="shapes")
def nino_cnn_wide(spec: TaskSpec) -> NiNoCNN:
    """NiNo's wider convnet (conv 32-64-64), an out-of-distribution task of the NiNo paper."""
    return _nino(spec, (32, 64, 64))


def _nino(spec: TaskSpec, channels: tuple[int, ...]) -> NiNoCNN:
    in_channels, height, width = spec.input_shape
    # The first, unpadded stride-2 convolution needs at least 3x3 pixels.
    if min(height, width) < 3:
        raise ConfigError(f"nino-cnn needs images of at least 3x3 pixels, got {height}x{width}")
    return NiNoCNN(in_channels, spec.num_outputs, channels)
