"""VGG-11 of the zoo (`zoo.models`), CIFAR style: eight 3x3 convolutions
(64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M; M = 2x2 max pool) times a width multiplier,
each followed by optional BatchNorm and ReLU, then global average pooling and one linear
classifier. Max pools are skipped once the feature map is 1 pixel high or wide, so 8x8 inputs work.
At `width=1` on 3x32x32 with 10 classes it has 9,228,362 parameters: the usual CIFAR VGG-11
(9,231,114) without the convolution biases that BatchNorm would cancel anyway."""

from __future__ import annotations

import torch
from torch import nn

from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min, scale_channels
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["VGG", "vgg11", "VGG11_LAYOUT"]

VGG11_LAYOUT: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        num_outputs: int,
        layout: tuple[int | str, ...] = VGG11_LAYOUT,
        width: float = 0.125,
        batch_norm: bool = True,
    ):
        super().__init__()
        h, w = image_size
        layers: list[nn.Module] = []
        for item in layout:
            if item == "M":
                if min(h, w) >= 2:
                    layers.append(nn.MaxPool2d(2))
                    h, w = h // 2, w // 2
                continue
            out_channels = scale_channels(int(item), width)
            # A convolution followed by BatchNorm needs no bias of its own.
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU())
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, 512w, h, w) -> global average pool -> (N, num_outputs)
        return self.head(self.features(x).mean((2, 3)))


@ARCHITECTURES.register("vgg11", inputs=("image",), default_task="shapes")
def vgg11(spec: TaskSpec, width: float = 0.125, batch_norm: bool = True) -> VGG:
    """VGG-11 with channels scaled by `width` (default 1/8: 8 ... 64 channels)."""
    check_min("vgg11", width=(width, 1e-3))
    channels, height, image_width = spec.input_shape
    return VGG(
        channels, (height, image_width), spec.num_outputs, width=width, batch_norm=bool(batch_norm)
    )
