"""Rule-based baselines of the `train_predictor` stage: no jump, and per-scalar curve fits over
the window (WNN paper, appendix eqs. 14-20), all vectorized over scalars, none trainable.

Time indices: the window's values sit at tau = 0..L-1 (oldest first); a prediction `horizon`
steps ahead is the fitted curve at tau = L - 1 + horizon. Fits extrapolate to any horizon.

- "no-jump": the last value (every metric is relative to it).
- "linear-fit", "poly2-fit": ridge least squares of a polynomial of degree 1 or 2 in tau,
  eqs. 14-15: prediction = w^T A^T (A A^T + rho I)^{-1} v(tau*), with A's rows the powers of tau
  (tau^d, ..., tau, 1) and v(tau*) the same powers at the target. For fixed L and horizon this is
  a fixed linear map of the window (a vector of L weights), computed once in float64. As written
  in the paper the ridge shrinks every coefficient, the intercept included, toward 0, so a large
  rho pulls predictions toward 0 (not monotonically); the default rho = 0 is least squares.
- "exp-fit": w(tau) = a + b r^tau (eq. 20, r = e^{-c}) with r estimated from the window's
  successive differences (d_{tau+1} = r d_tau: least squares ratio) and clamped to [0, 1], then
  (a, b) by least squares. Written with the feature v_tau = 1 + r + ... + r^{tau-1} (an affine
  reparametrization), which stays well conditioned as r -> 1 and there becomes the linear fit; a
  constant window gives r = 1. Exact on a + b r^tau with 0 <= r <= 1; never grows exponentially.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from weightcast.train_predictor.predictors.base import RuleBasedPredictor, register_predictor

__all__ = ["NoJump", "PolynomialFit", "LinearFit", "Poly2Fit", "ExpFit", "polynomial_fit_map"]


def polynomial_fit_map(input_length: int, horizon: int, degree: int, rho: float) -> Tensor:
    """(L,) float64 weights m with `window @ m` = the ridge polynomial fit at L - 1 + horizon."""
    powers = torch.arange(degree, -1, -1, dtype=torch.float64)  # (d+1,): d, ..., 1, 0
    tau = torch.arange(input_length, dtype=torch.float64)
    design = tau[None, :] ** powers[:, None]  # A: (d+1, L)
    target = torch.tensor(input_length - 1.0 + horizon, dtype=torch.float64) ** powers  # (d+1,)
    gram = design @ design.T + rho * torch.eye(degree + 1, dtype=torch.float64)
    return design.T @ torch.linalg.solve(gram, target)


@register_predictor
class NoJump(RuleBasedPredictor):
    """The last value, whatever the horizon."""

    kind = "no-jump"

    def __init__(self, input_length: int = 1, horizon: int = 1):
        config = dict(input_length=input_length, horizon=horizon)
        super().__init__(input_length=input_length, horizon=horizon, config=config)

    def extrapolate(self, window: Tensor, horizon: int) -> Tensor:
        return window[:, -1].clone()


class PolynomialFit(RuleBasedPredictor):
    """Ridge polynomial fit of degree `degree` (class attribute) over the window."""

    degree: ClassVar[int]

    def __init__(self, input_length: int = 5, horizon: int = 5, rho: float = 0.0):
        if rho < 0 or (rho == 0 and input_length <= self.degree):
            raise self.config_error(
                f"need rho >= 0, and input_length > {self.degree} when rho == 0; "
                f"got {input_length=}, {rho=}"
            )
        config = dict(input_length=input_length, horizon=horizon, rho=rho)
        super().__init__(input_length=input_length, horizon=horizon, config=config)
        self.rho = rho
        self._maps: dict[int, Tensor] = {}  # horizon -> (L,) float64 map

    def extrapolate(self, window: Tensor, horizon: int) -> Tensor:
        if horizon not in self._maps:
            self._maps[horizon] = polynomial_fit_map(self.input_length, horizon, self.degree, self.rho)
        return window @ self._maps[horizon].to(device=window.device, dtype=window.dtype)


@register_predictor
class LinearFit(PolynomialFit):
    """Linear ridge fit (WNN appendix eq. 15)."""

    kind = "linear-fit"
    degree = 1


@register_predictor
class Poly2Fit(PolynomialFit):
    """Second-order polynomial ridge fit (WNN appendix eq. 19)."""

    kind = "poly2-fit"
    degree = 2


@register_predictor
class ExpFit(RuleBasedPredictor):
    """Exponential approach to an asymptote, a + b r^tau with r in [0, 1] (module docstring)."""

    kind = "exp-fit"

    def __init__(self, input_length: int = 5, horizon: int = 5):
        if input_length < 3:
            raise self.config_error(f"input_length must be >= 3 (two differences), got {input_length}")
        config = dict(input_length=input_length, horizon=horizon)
        super().__init__(input_length=input_length, horizon=horizon, config=config)

    def extrapolate(self, window: Tensor, horizon: int) -> Tensor:
        length = window.shape[1]
        steps = window.diff(dim=1)  # (N, L-1)
        num = (steps[:, 1:] * steps[:, :-1]).sum(dim=1)
        den = steps[:, :-1].square().sum(dim=1)
        # The ratio and the geometric sums in float64: (1 - r^h) / (1 - r) cancels near r = 1.
        ratio = num.double() / den.double().clamp_min(torch.finfo(torch.float64).tiny)
        ratio = torch.where(den > 0, ratio, 1.0).clamp(0.0, 1.0)[:, None]  # (N, 1)
        powers = ratio ** torch.arange(length - 1, device=window.device)  # (N, L-1): r^0..r^{L-2}
        feature = torch.cat([torch.zeros_like(ratio), powers.cumsum(dim=1)], dim=1)  # (N, L)
        # v at tau* = L-1+h: v_{L-1} + r^{L-1} (1 + r + ... + r^{h-1})
        tail = torch.where(ratio < 1, (1 - ratio**horizon) / (1 - ratio).clamp_min(1e-300), horizon)
        target = feature[:, -1:] + ratio ** (length - 1) * tail  # (N, 1)
        feature, target = feature.to(window.dtype), target.to(window.dtype)
        centered = feature - feature.mean(dim=1, keepdim=True)  # never all 0: v_0 = 0, v_1 = 1
        mean = window.mean(dim=1, keepdim=True)
        slope = (centered * (window - mean)).sum(dim=1) / centered.square().sum(dim=1)
        return mean[:, 0] + slope * (target[:, 0] - feature.mean(dim=1))
