"""LeNet-5 of the zoo (`zoo.models`): conv6 -> pool -> conv16 -> pool -> fc120 -> fc84 -> out.

The classic network expects 32x32 inputs (28x28 MNIST digits padded by 2). Here each 5x5
convolution is zero-padded by 2 along a dimension that would otherwise be too small, so 28x28 and
32x32 inputs give the classic 16x5x5 feature map (61,706 parameters for 1x32x32 and 10 classes),
and 8x8 or 16x16 inputs still work. ReLU and max pooling replace the original tanh and subsampling,
as in most modern reimplementations; the C3 layer is fully connected to S2."""

from __future__ import annotations

import torch
from torch import nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, image_size: tuple[int, int], num_outputs: int):
        super().__init__()
        h, w = image_size
        pad1 = (_pad(h, 32), _pad(w, 32))
        h, w = (h + 2 * pad1[0] - 4) // 2, (w + 2 * pad1[1] - 4) // 2
        pad2 = (_pad(h, 10), _pad(w, 10))
        h, w = (h + 2 * pad2[0] - 4) // 2, (w + 2 * pad2[1] - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * h * w, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, 16, h, w) -> (N, num_outputs)
        return self.classifier(self.features(x).flatten(1))


@ARCHITECTURES.register("lenet5", inputs=("image",), default_task="shapes")
def lenet5(spec: TaskSpec) -> LeNet5:
    """LeNet-5 for any channel count and images of at least 4x4 pixels."""
    channels, height, width = spec.input_shape
    if min(height, width) < 4:
        raise ConfigError(f"lenet5 needs images of at least 4x4 pixels, got {height}x{width}")
    return LeNet5(channels, (height, width), spec.num_outputs)


def _pad(size: int, classic: int) -> int:
    """Padding of a 5x5 convolution along one dimension: none at the classic size or above,
    otherwise 2 ("same" size)."""
    return 0 if size >= classic else 2
