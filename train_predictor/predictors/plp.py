"""PLP, Parameter Linear Prediction (arXiv 2310.10958), a rule-based `train_predictor` predictor.

From three consecutive states theta1, theta2, theta3 (oldest first): take the midpoints of the
consecutive pairs, m1 = (theta1 + theta2) / 2 and m2 = (theta2 + theta3) / 2, their slope per
step m2 - m1 = (theta3 - theta1) / 2, and step along it from the last state:
theta <- theta3 + horizon * (theta3 - theta1) / 2 (horizon 1 in the paper, applied after every
3 optimizer steps).
"""

from __future__ import annotations

from torch import Tensor

from weightcast.train_predictor.predictors.base import RuleBasedPredictor, register_predictor

__all__ = ["PLP"]


@register_predictor
class PLP(RuleBasedPredictor):
    """theta3 + horizon * (theta3 - theta1) / 2 on windows (N, 3)."""

    kind = "plp"

    def __init__(self, horizon: int = 1):
        super().__init__(input_length=3, horizon=horizon, config=dict(horizon=horizon))

    def extrapolate(self, window: Tensor, horizon: int) -> Tensor:
        slope = (window[:, 2] - window[:, 0]) / 2  # (N,): slope of the two midpoints
        return window[:, 2] + horizon * slope
