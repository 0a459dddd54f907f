"""WNN, the Weight Nowcaster Network (Jang et al., ICML 2023), a `train_predictor` predictor.

Per scalar, from its last `input_length` (5) values: normalize (subtract the window's FIRST value,
divide by `2 * (max - min + eps)`), feed the normalized values and their first differences to two
streams, and predict a bounded residual `delta = tanh(...)`; the prediction `horizon` (5) steps
ahead is `w[first] + 2 * (range + eps) * (L[last] + delta)`, i.e. the last value plus up to about
twice the window's range. Layer sizes, initialization and the L1 penalties follow the authors'
Keras model (9,425 parameters at input_length 5).

Differences are fed oldest first, `L[1]-L[0], ..., L[4]-L[3]`, as the authors' code does (the
paper's eq. 6 lists them newest first). VarianceScaling init and the L1 penalties apply to the
four stream Dense layers only; the activation networks and the head keep Keras defaults
(glorot_uniform kernels, zero biases), as in the authors' model.

eps: the paper states no epsilon; the authors' code divides by `2 * (range + 1e-8 + 1e-5)`. We use
one `eps`, 1e-5 by default (pass 1.001e-5 to match their code exactly).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train_predictor.predictors.base import Predictor, register_predictor

__all__ = ["WNN", "normalize", "denormalize"]

_STREAM_WIDTH = 64  # Dense(64) after each stream's input
_ACT_HIDDEN = 8  # bottleneck of the activation network
_STREAM_OUT = 32  # Dense(32) at each stream's end
_LEAKY_SLOPE = 0.3  # Keras LeakyReLU default, which the authors use
_INIT_SCALE = 0.1  # VarianceScaling(scale=0.1, mode="fan_in", distribution="uniform")


def normalize(window: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """WNN normalization of (N, L) windows: returns (normalized (N, L), anchor (N, 1),
    scale (N, 1)) with anchor = the first value and scale = 2 * (max - min + eps)."""
    anchor = window[:, :1]
    scale = 2 * (window.amax(dim=1, keepdim=True) - window.amin(dim=1, keepdim=True) + eps)
    return (window - anchor) / scale, anchor, scale


def denormalize(values: Tensor, anchor: Tensor, scale: Tensor) -> Tensor:
    """Inverse of `normalize` for normalized values (N, k) given anchor and scale (N, 1)."""
    return anchor + scale * values


@register_predictor
class WNN(Predictor):
    """Two-stream weight nowcaster; `horizon` is the skip (epochs between the last input and the
    target), metadata for which step the network was trained on."""

    kind = "wnn"

    def __init__(
        self,
        input_length: int = 5,
        horizon: int = 5,
        eps: float = 1e-5,
        kernel_l1: float = 1e-6,
        bias_l1: float = 0.1,
    ):
        if input_length < 2:
            raise self.config_error(f"input_length must be >= 2 (one difference), got {input_length}")
        if eps <= 0 or kernel_l1 < 0 or bias_l1 < 0:
            raise self.config_error(
                f"need eps > 0 and non-negative L1 weights, got {eps=}, {kernel_l1=}, {bias_l1=}"
            )
        config = dict(
            input_length=input_length, horizon=horizon, eps=eps, kernel_l1=kernel_l1, bias_l1=bias_l1
        )
        super().__init__(input_length=input_length, horizon=horizon, config=config)
        self.eps, self.kernel_l1, self.bias_l1 = eps, kernel_l1, bias_l1
        self.values = _Stream(input_length)  # normalized values
        self.diffs = _Stream(input_length - 1)  # their first differences, oldest first
        self.head = nn.Linear(2 * _STREAM_OUT, 1)
        nn.init.xavier_uniform_(self.head.weight)  # Keras default (glorot_uniform), zero bias
        nn.init.zeros_(self.head.bias)

    def delta(self, normalized: Tensor) -> Tensor:
        """(N, L) normalized windows -> (N, 1) residual in normalized units, in (-1, 1)."""
        features = torch.cat([self.values(normalized), self.diffs(normalized.diff(dim=1))], dim=1)
        return torch.tanh(self.head(features))

    def forward(self, window: Tensor) -> Tensor:
        """(N, L) -> (N, 1) prediction `horizon` steps after the last input."""
        normalized, anchor, scale = normalize(window, self.eps)
        return denormalize(normalized[:, -1:] + self.delta(normalized), anchor, scale)

    def loss(self, window: Tensor, target: Tensor) -> Tensor:
        """Mean |delta - (normalized target - L[last])| (normalized units, eq. 9 of the paper)
        plus the L1 penalties of `regularization`."""
        target = self.check_target(window, target)
        normalized, anchor, scale = normalize(window, self.eps)
        residual = (target - anchor) / scale - normalized[:, -1:]  # (N, 1)
        return (self.delta(normalized) - residual).abs().mean() + self.regularization()

    def stream_layers(self) -> list[nn.Linear]:
        """The Dense(64) and Dense(32) of both streams: VarianceScaling init, L1-penalized."""
        return [self.values.inp, self.values.out, self.diffs.inp, self.diffs.out]

    def regularization(self) -> Tensor:
        """kernel_l1 * sum|kernel| + bias_l1 * sum|bias| over the four stream Dense layers
        (Keras adds these once per batch, not per sample)."""
        kernels = sum(layer.weight.abs().sum() for layer in self.stream_layers())
        biases = sum(layer.bias.abs().sum() for layer in self.stream_layers())
        return self.kernel_l1 * kernels + self.bias_l1 * biases


class _Stream(nn.Module):
    """Dense(64) -> activation network -> Dense(32) -> LeakyReLU(0.3), on (N, in_features)."""

    def __init__(self, in_features: int):
        super().__init__()
        self.inp = nn.Linear(in_features, _STREAM_WIDTH)
        self.act = _ActivationNetwork(_STREAM_WIDTH, _ACT_HIDDEN)
        self.out = nn.Linear(_STREAM_WIDTH, _STREAM_OUT)
        for layer in (self.inp, self.out):  # the stream layers carry the paper's init and L1
            _variance_scaling_(layer.weight, _INIT_SCALE)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.out(self.act(self.inp(x))), _LEAKY_SLOPE)


class _ActivationNetwork(nn.Module):
    """Learned activation on h (N, 64): z = ReLU(Dense8(h)); A(z) + B(z) * exp(C(z) * h)."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.squeeze = nn.Linear(width, hidden)
        self.a = nn.Linear(hidden, width)
        self.b = nn.Linear(hidden, width)
        self.c = nn.Linear(hidden, width)
        for layer in (self.squeeze, self.a, self.b, self.c):  # Keras defaults
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: Tensor) -> Tensor:
        z = F.relu(self.squeeze(h))  # (N, 8)
        if torch.is_grad_enabled():
            return torch.addcmul(self.a(z), self.b(z), torch.exp(self.c(z) * h))  # (N, 64)
        # Inference (predict): the same in place, a third less memory traffic on (N, 64).
        return self.b(z).mul_(self.c(z).mul_(h).exp_()).add_(self.a(z))


def _variance_scaling_(weight: Tensor, scale: float) -> None:
    """Keras VarianceScaling(scale, fan_in, uniform): U(-sqrt(3 scale / fan_in), +...)."""
    limit = math.sqrt(3 * scale / weight.shape[1])  # nn.Linear weight is (out, in)
    with torch.no_grad():
        weight.uniform_(-limit, limit)
