"""Introspection (Sinha et al., 2017), a trainable `train_predictor` baseline.

A 4 -> 40 -> 1 ReLU network maps the values of a scalar at steps 0, 0.4t, 0.7t and t to its
value at step 2t. Inputs and targets are multiplied by `scale` (1000) so that typical weights
are O(1) for the network; the loss is L1 in those scaled units and the output is divided back.

Window: steps 0..t, so input_length = t + 1 and the prediction is `horizon` = t steps after the
last input. Fractional steps are rounded half up: round(0.4t), round(0.7t) = floor(x + 0.5)
(t = 20: steps 0, 8, 14, 20; t = 5: steps 0, 2, 4, 5).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from weightcast.train_predictor.predictors.base import Predictor, register_predictor

__all__ = ["Introspection", "introspection_steps"]

_FRACTIONS = (0.0, 0.4, 0.7, 1.0)
_HIDDEN = 40


def introspection_steps(t: int) -> tuple[int, ...]:
    """Window indices read for step t: 0, round(0.4t), round(0.7t), t (rounded half up)."""
    return tuple(math.floor(f * t + 0.5) for f in _FRACTIONS)


@register_predictor
class Introspection(Predictor):
    """Predicts step 2t from steps 0, 0.4t, 0.7t, t of a window of t + 1 values."""

    kind = "introspection"

    def __init__(self, t: int = 20, scale: float = 1000.0):
        if t < 1 or scale <= 0:
            raise self.config_error(f"need t >= 1 and scale > 0, got {t=}, {scale=}")
        super().__init__(input_length=t + 1, horizon=t, config=dict(t=t, scale=scale))
        self.scale = scale
        self.steps = introspection_steps(t)
        self.hidden = nn.Linear(len(_FRACTIONS), _HIDDEN)
        self.out = nn.Linear(_HIDDEN, 1)

    def forward(self, window: Tensor) -> Tensor:
        """(N, t + 1) -> (N, 1) value at step 2t."""
        return self._scaled(window) / self.scale

    def loss(self, window: Tensor, target: Tensor) -> Tensor:
        """Mean |network - scale * target|, in scaled units."""
        target = self.check_target(window, target)
        return (self._scaled(window) - self.scale * target).abs().mean()

    def _scaled(self, window: Tensor) -> Tensor:
        """(N, t + 1) -> (N, 1) network output in scaled units."""
        return self.out(F.relu(self.hidden(self.scale * window[:, self.steps])))
