"""CIFAR-style ResNets of the zoo (`zoo.models`), as in He et al. 2016 section 4.2: a 3x3 stem,
three stages of BasicBlocks with 16, 32, 64 channels (times `width`), the second and third
stages starting with stride 2, global average pooling and a linear classifier. Depth 6n + 2.

Shortcuts that change shape are option A by default (stride-2 subsampling and zero-padded
channels, no parameters: 269,722 parameters for resnet20 and 464,154 for resnet32 on 3x32x32 with
10 classes, as in the common CIFAR reimplementations) or option B
(`shortcut="B"`: 1x1 convolution + BatchNorm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min, scale_channels
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32"]

SHORTCUTS = ("A", "B")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.pad = out_channels - in_channels
        self.projection: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or in_channels != out_channels):
            self.projection = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            return self.projection(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # Option A: zero channels split before and after, (N, C_in, h, w) -> (N, C_out, h, w).
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


class CifarResNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        blocks_per_stage: int,
        width: float = 1.0,
        shortcut: str = "A",
    ):
        super().__init__()
        widths = [scale_channels(c, width) for c in (16, 32, 64)]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        channels = widths[0]
        for i, out_channels in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride, shortcut))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, 64w, H/4, W/4) -> global average pool -> (N, num_outputs)
        x = F.relu(self.stem_bn(self.stem(x)))
        return self.head(self.stages(x).mean((2, 3)))


@ARCHITECTURES.register("resnet20", inputs=("image",), default_task="shapes")
def resnet20(spec: TaskSpec, width: float = 1.0, shortcut: str = "A") -> CifarResNet:
    """ResNet-20 (3 BasicBlocks per stage)."""
    return _resnet("resnet20", spec, 3, width, shortcut)


@ARCHITECTURES.register("resnet32", inputs=("image",), default_task="shapes")
def resnet32(spec: TaskSpec, width: float = 1.0, shortcut: str = "A") -> CifarResNet:
    """ResNet-32 (5 BasicBlocks per stage)."""
    return _resnet("resnet32", spec, 5, width, shortcut)


def _resnet(
    arch: str, spec: TaskSpec, blocks_per_stage: int, width: float, shortcut: str
) -> CifarResNet:
    check_min(arch, width=(width, 1e-3))
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"{arch}: shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    return CifarResNet(spec.input_shape[0], spec.num_outputs, blocks_per_stage, width, shortcut)
