"""1-D convolutional network of the zoo (`zoo.models`) for signals (C, L): three convolutions
with 32, 64, 64 channels (kernel 5, "same" padding, ReLU), a 2x max pool after each of the first
two while the sequence is at least 2 steps long, global average pooling over time and a linear
classifier."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["Conv1dNet", "conv1d"]


class Conv1dNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        length: int,
        num_outputs: int,
        channels: Sequence[int] = (32, 64, 64),
        kernel_size: int = 5,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        for i, out_channels in enumerate(channels):
            layers += [
                nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                nn.ReLU(),
            ]
            if i < len(channels) - 1 and length >= 2:
                layers.append(nn.MaxPool1d(2))
                length //= 2
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, L) -> (N, 64, L/4) -> mean over time (N, 64) -> (N, num_outputs)
        return self.head(self.features(x).mean(2))


@ARCHITECTURES.register("conv1d", inputs=("signal",), default_task="mnist1d")
def conv1d(spec: TaskSpec, kernel_size: int = 5) -> Conv1dNet:
    """1-D CNN (conv 32-64-64, kernel `kernel_size`, odd)."""
    check_min("conv1d", kernel_size=(kernel_size, 1))
    if kernel_size % 2 == 0:
        raise ConfigError(f"conv1d: kernel_size must be odd for 'same' padding, got {kernel_size}")
    channels, length = spec.input_shape
    return Conv1dNet(channels, length, spec.num_outputs, kernel_size=kernel_size)
