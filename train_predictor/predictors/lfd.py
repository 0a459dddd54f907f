"""LFD-2 and its linear baselines LFN, LFL, LFS (Shou et al., "Less is More: Efficient Weight
Farcasting with 1-Layer Neural Network"), `train_predictor` predictors.

One family: a single `nn.Linear(k, m)` with bias, shared by all scalars (channel-independent, as
LTSF-Linear), maps k chosen columns of the window `w_0..w_n` (n = input_length - 1) directly to
the m future values `w_{n+1}..w_{n+m}` (direct multi-step forecasting). The members differ only
in the columns: LFD-2 the first and last (w_0, w_n), LFN all n+1, LFL the last, LFS a fixed
sampled subset.

`normalize=True` (registered as "lfd2-norm" for LFD-2; a flag for all members) anchors each
window at w_n and scales it by its range + eps; the network then reads and predicts normalized
values, so a prediction is invariant to affine changes of units and transfers across layers.
The paper feeds raw weights (`normalize=False`).

`init` (LFD-2): "default" is PyTorch's (LTSF-Linear's) init, as in the paper; "no-jump" starts
the layer at weight 1 on w_n, 0 elsewhere and zero bias, so that training starts from the
no-jump baseline instead of a random map (far better on short zoo trajectories).

Loss: entry-wise mean L1 between predicted and true futures (in normalized units when
normalized) plus `reg_weight` times the trajectory regularizer below.

Inference (`predict` at one horizon) on raw windows is one fused pass per used column:
`bias + w_0 * window[:, c_0]`, then `+= w_k * window[:, c_k]`, over cache-sized pieces of the
output, so only the used columns are read (LFD-2: two) and nothing but the output is written.

Trajectory regularizer (our reading of the paper's eq. 6, motivated by first-order optimality:
steps shrink near convergence): take the predicted path P_0 = w_n (the last input), P_j = the
j-th predicted value (j = 1..m), its steps d_j = P_{j+1} - P_j (j = 0..m-1), and penalize
mean over j = K..m-1 (and over scalars) of max(0, |d_j| - |d_{j-1}|), K = `reg_start`
(default m // 2, at least 1): predicted steps late in the horizon may not grow.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightcast.train_predictor.predictors.base import Kernel, Predictor, register_predictor

__all__ = ["LinearFarcaster", "LFD2", "LFD2Norm", "LFN", "LFL", "LFS", "trajectory_regularizer"]

INITS = ("default", "no-jump")  # of the linear layer, see the module docstring
# Output scalars per pass of the inference kernel: 512 KB of float32 output, which the following
# per-column passes find in the L2 caches.
_PIECE = 131_072


def trajectory_regularizer(last: Tensor, path: Tensor, start: int) -> Tensor:
    """mean(max(0, |d_j| - |d_{j-1}|)) over j >= start of the steps d of the path
    [last (N, 1), path (N, m)]; zero when no pair j >= max(start, 1) exists."""
    steps = torch.cat([last, path], dim=1).diff(dim=1).abs()  # (N, m): |d_0| .. |d_{m-1}|
    start = max(start, 1)
    if start >= steps.shape[1]:
        return path.new_zeros(())
    return F.relu(steps[:, start:] - steps[:, start - 1 : -1]).mean()


class LinearFarcaster(Predictor):
    """The family's shared machinery; members choose `columns` (indices into the window)."""

    def __init__(
        self,
        columns: Sequence[int],
        input_length: int,
        horizon: int,
        normalize: bool,
        eps: float,
        reg_weight: float,
        reg_start: int | None,
        **member_config: bool | int | float | str,
    ):
        reg_start = max(horizon // 2, 1) if reg_start is None else reg_start
        if eps <= 0 or reg_weight < 0 or reg_start < 1:
            raise self.config_error(
                f"need eps > 0, reg_weight >= 0 and reg_start >= 1, got {eps=}, {reg_weight=}, "
                f"{reg_start=}"
            )
        config = dict(
            input_length=input_length,
            horizon=horizon,
            normalize=normalize,
            eps=eps,
            reg_weight=reg_weight,
            reg_start=reg_start,
            **member_config,
        )
        super().__init__(input_length=input_length, horizon=horizon, config=config)
        self.columns = tuple(int(c) for c in columns)
        if not self.columns or not all(0 <= c < input_length for c in self.columns):
            raise self.config_error(f"columns {self.columns} must index a window of {input_length}")
        self.normalize, self.eps = normalize, eps
        self.reg_weight, self.reg_start = reg_weight, reg_start
        self.linear = nn.Linear(len(self.columns), horizon)
        init = member_config.get("init", "default")
        if init not in INITS:
            raise self.config_error(f"init must be one of {INITS}, got {init!r}")
        if init == "no-jump" and input_length - 1 in self.columns:
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.zero_()
                self.linear.weight[:, self.columns.index(input_length - 1)] = 1.0

    @property
    def horizons(self) -> tuple[int, ...]:
        return tuple(range(1, self.horizon + 1))

    def forward(self, window: Tensor) -> Tensor:
        """(N, L) -> (N, m) values 1..m steps after the last input."""
        return self._rows(window, slice(None))

    def extrapolate(self, window: Tensor, horizon: int) -> Tensor:
        """(N, L) -> (N,): only the output row of `horizon`, not the whole path."""
        return self._rows(window, slice(horizon - 1, horizon))[:, 0]

    def predict_kernel(self, horizon: int) -> Kernel:
        """Raw windows: the fused per-column passes of the module docstring; normalized windows
        read every column anyway (their range), so they use `extrapolate`."""
        if self.normalize:
            return super().predict_kernel(horizon)
        weights = self.linear.weight[horizon - 1].tolist()  # Python floats: scalar `alpha`s
        bias = self.linear.bias[horizon - 1].detach()  # 0-dim: broadcast, no (c,) temporary
        first, rest = (self.columns[0], weights[0]), list(zip(self.columns[1:], weights[1:]))

        def kernel(window: Tensor, out: Tensor) -> None:
            for begin in range(0, window.shape[0], _PIECE):
                piece, target = window[begin : begin + _PIECE], out[begin : begin + _PIECE]
                torch.add(bias, piece[:, first[0]], alpha=first[1], out=target)
                for column, weight in rest:
                    target.add_(piece[:, column], alpha=weight)

        return kernel

    def loss(self, window: Tensor, target: Tensor) -> Tensor:
        """Mean L1 to the true futures (N, m) + reg_weight * trajectory regularizer, in the
        units the network predicts in (normalized when `normalize`)."""
        target = self.check_target(window, target)
        inputs, anchor, scale = self._inputs(window)
        path = self.linear(inputs)  # (N, m)
        last = window[:, -1:]  # P_0 of the regularizer's path
        if anchor is not None:
            target, last = (target - anchor) / scale, torch.zeros_like(last)
        loss = (path - target).abs().mean()
        if self.reg_weight > 0:
            loss = loss + self.reg_weight * trajectory_regularizer(last, path, self.reg_start)
        return loss

    def _rows(self, window: Tensor, rows: slice) -> Tensor:
        """(N, L) -> (N, k) predictions at the horizons of the linear layer's output `rows`."""
        inputs, anchor, scale = self._inputs(window)
        path = F.linear(inputs, self.linear.weight[rows], self.linear.bias[rows])
        return path if anchor is None else torch.addcmul(anchor, scale, path)

    def _inputs(self, window: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Network inputs (N, k) and, when normalized, the anchor and scale (N, 1) that map its
        outputs back to the window's units."""
        if not self.normalize:
            return window[:, self.columns], None, None
        anchor = window[:, -1:]
        scale = window.amax(dim=1, keepdim=True) - window.amin(dim=1, keepdim=True) + self.eps
        return (window[:, self.columns] - anchor) / scale, anchor, scale


@register_predictor
class LFD2(LinearFarcaster):
    """LFD-2: Linear(2 -> m) on the first and last value of the window."""

    kind = "lfd2"

    def __init__(
        self,
        input_length: int = 21,
        horizon: int = 180,
        normalize: bool = False,
        eps: float = 1e-8,
        reg_weight: float = 1e-3,
        reg_start: int | None = None,
        init: str = "default",
    ):
        if input_length < 2:
            raise self.config_error(f"input_length must be >= 2 (first and last), got {input_length}")
        super().__init__(
            (0, input_length - 1), input_length, horizon, normalize, eps, reg_weight, reg_start, init=init
        )


@register_predictor
class LFD2Norm(LFD2):
    """LFD-2 on normalized windows (anchor w_n, scale range + eps); `normalize` must stay True."""

    kind = "lfd2-norm"

    def __init__(
        self,
        input_length: int = 21,
        horizon: int = 180,
        normalize: bool = True,
        eps: float = 1e-8,
        reg_weight: float = 1e-3,
        reg_start: int | None = None,
        init: str = "default",
    ):
        if not normalize:
            raise self.config_error("is LFD-2 with normalize=True; use 'lfd2' for raw windows")
        super().__init__(input_length, horizon, True, eps, reg_weight, reg_start, init)


@register_predictor
class LFN(LinearFarcaster):
    """LFN: Linear(n+1 -> m) on the whole window (the paper trains it without the regularizer)."""

    kind = "lfn"

    def __init__(
        self,
        input_length: int = 21,
        horizon: int = 180,
        normalize: bool = False,
        eps: float = 1e-8,
        reg_weight: float = 0.0,
        reg_start: int | None = None,
    ):
        super().__init__(
            range(input_length), input_length, horizon, normalize, eps, reg_weight, reg_start
        )


@register_predictor
class LFL(LinearFarcaster):
    """LFL: Linear(1 -> m) on the last value only."""

    kind = "lfl"

    def __init__(
        self,
        input_length: int = 21,
        horizon: int = 180,
        normalize: bool = False,
        eps: float = 1e-8,
        reg_weight: float = 0.0,
        reg_start: int | None = None,
    ):
        super().__init__(
            (input_length - 1,), input_length, horizon, normalize, eps, reg_weight, reg_start
        )


@register_predictor
class LFS(LinearFarcaster):
    """LFS: Linear(k -> m) on a fixed subset of k = `num_samples` columns: evenly spaced
    (`sampling="even"`, first and last included) or drawn uniformly without replacement with
    `seed` (`sampling="random"`, as the paper)."""

    kind = "lfs"

    def __init__(
        self,
        input_length: int = 21,
        horizon: int = 180,
        num_samples: int = 5,
        sampling: str = "even",
        seed: int = 0,
        normalize: bool = False,
        eps: float = 1e-8,
        reg_weight: float = 0.0,
        reg_start: int | None = None,
    ):
        if not 1 <= num_samples <= input_length or sampling not in ("even", "random"):
            raise self.config_error(
                f"need 1 <= num_samples <= input_length ({input_length}) and sampling 'even' or "
                f"'random', got {num_samples=}, {sampling=}"
            )
        if sampling == "even":
            columns = torch.linspace(0, input_length - 1, num_samples).round().long()
        else:
            generator = torch.Generator().manual_seed(seed)
            columns = torch.randperm(input_length, generator=generator)[:num_samples].sort().values
        super().__init__(
            columns.tolist(),
            input_length,
            horizon,
            normalize,
            eps,
            reg_weight,
            reg_start,
            num_samples=num_samples,
            sampling=sampling,
            seed=seed,
        )
