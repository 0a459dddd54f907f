"""Multi-layer perceptron of the zoo (`zoo.models`): flattens any image, signal or tabular input.

`depth=0` is a plain linear model; `mlp` with depth 1, width 10 on a (1,) tabular input with one
regression output is LFD-2's Syn-2 network (1 -> 10 -> 1, 31 parameters)."""

from __future__ import annotations

import math

import torch
from torch import nn

from weightcast.zoo.models.base import ARCHITECTURES
from weightcast.zoo.models.common import check_min
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """Flatten -> `depth` x (Linear(width) -> ReLU) -> Linear(num_outputs)."""

    def __init__(self, in_features: int, num_outputs: int, depth: int = 2, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        features = in_features
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        self.hidden = nn.Sequential(*layers)
        self.head = nn.Linear(features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, *input_shape) -> (N, num_outputs)
        return self.head(self.hidden(x.flatten(1)))


@ARCHITECTURES.register("mlp", inputs=("image", "signal", "tabular"), default_task="mnist1d")
def mlp(spec: TaskSpec, depth: int = 2, width: int = 64) -> MLP:
    """MLP with `depth` hidden ReLU layers of `width` units (depth 0: linear model)."""
    check_min("mlp", depth=(depth, 0), width=(width, 1))
    return MLP(math.prod(spec.input_shape), spec.num_outputs, depth=depth, width=width)
