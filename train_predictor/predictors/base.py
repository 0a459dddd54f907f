"""The predictor interface of the `train_predictor` stage, and the `PREDICTORS` registry.

Every predictor is element-wise: it reads the recent history of N scalar weights as a window
(N, input_length), oldest step first, and predicts their future values. `train_predictor` fits
the trainable ones per layer type; `eval` and the live-training policy call `predict`.

Contract of a `Predictor` subclass:
- `kind` (class attribute): its registry name; `trainable` (class attribute).
- `input_length`: how many past values per scalar `forward`/`predict` read.
- `horizons`: the steps after the last input that `forward` returns, one column each: `(horizon,)`
  for nowcasters and rule-based fits, `(1, ..., m)` for multi-step farcasters.
- `horizon`: the step `predict` returns by default (the last of `horizons`).
- `forward(window) -> (N, len(horizons))`: differentiable, in the window's units.
- `predict(window, horizon=None) -> (N,)` and `predict_path(window) -> (N, len(horizons))`:
  inference only (no autograd), chunked over scalars, output in the window's dtype and device.
  `predict` runs `predict_kernel(horizon)`, which subclasses may override with a fused fast path
  (WNN, the linear farcasters) that computes the same function as `extrapolate`.
- `loss(window, target) -> scalar`: training objective, regularization included (trainable only).
- `config`: the JSON-able constructor keyword arguments; `build_predictor(kind, **config)` rebuilds
  an identical architecture (load the state dict to get identical outputs).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.registry import Registry

__all__ = [
    "Predictor",
    "RuleBasedPredictor",
    "PREDICTORS",
    "register_predictor",
    "build_predictor",
    "DEFAULT_CHUNK_SIZE",
    "Kernel",
]

# Scalars per inference chunk: bounds the windows converted to the predictor's dtype/device at
# once. The fused kernels work inside a chunk in cache-sized blocks of their own.
DEFAULT_CHUNK_SIZE = 1_000_000

# kernel(window chunk (c, L), out (c,)): writes the chunk's predictions into `out`.
Kernel = Callable[[Tensor, Tensor], None]

PREDICTORS: Registry[type["Predictor"]] = Registry("predictor")

_JSON_SCALARS = (bool, int, float, str)


class Predictor(nn.Module):
    """Base class of all element-wise weight predictors (see the module docstring)."""

    kind: ClassVar[str] = ""
    trainable: ClassVar[bool] = True

    def __init__(self, *, input_length: int, horizon: int, config: dict[str, Any]):
        super().__init__()
        if input_length < 1 or horizon < 1:
            raise self.config_error(f"input_length and horizon must be >= 1, got {input_length}, {horizon}")
        bad = {k: v for k, v in config.items() if not isinstance(v, _JSON_SCALARS)}
        if bad:
            raise self.config_error(f"config values must be bool, int, float or str, got {bad}")
        self.input_length = int(input_length)
        self.horizon = int(horizon)
        self._config = dict(config)

    @classmethod
    def config_error(cls, message: str) -> ConfigError:
        """The exception subclasses raise for an invalid constructor argument."""
        return ConfigError(f"predictor {cls.kind!r}: {message}")

    @property
    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON values) that rebuild this predictor."""
        return dict(self._config)

    @property
    def horizons(self) -> tuple[int, ...]:
        """Steps after the last input covered by the columns of `forward`'s output."""
        return (self.horizon,)

    def supports_horizon(self, horizon: int) -> bool:
        """Whether `predict(window, horizon)` is defined (rule-based fits extrapolate anywhere)."""
        return horizon in self.horizons

    def extrapolate(self, window: Tensor, horizon: int) -> Tensor:
        """(N, L) -> (N,) value `horizon` steps after the last input; differentiable.
        Rule-based fits override this to evaluate any horizon."""
        return self(window)[:, self.horizons.index(horizon)]

    def loss(self, window: Tensor, target: Tensor) -> Tensor:
        """Scalar training loss on (window (N, L), target (N,) or (N, len(horizons)))."""
        raise TypeError(f"predictor {self.kind!r} is rule-based (trainable=False): it has no loss")

    def predict(
        self,
        window: Tensor,
        horizon: int | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        out: Tensor | None = None,
    ) -> Tensor:
        """(N, input_length) -> (N,): the value `horizon` (default `self.horizon`) steps after
        the last input, without autograd, at most `chunk_size` scalars at a time; written into
        `out` ((N,), the window's dtype and device) when given, e.g. a buffer reused across
        calls, which saves allocating (and page-faulting) N fresh values per call."""
        horizon = self.horizon if horizon is None else horizon
        if not self.supports_horizon(horizon):
            raise ValueError(
                f"predictor {self.kind!r} cannot predict horizon={horizon}; it covers {self.horizons}"
            )
        self.check_window(window)
        if out is not None and (
            out.shape != window.shape[:1] or out.dtype != window.dtype or out.device != window.device
        ):
            raise ValueError(
                f"out must be a ({window.shape[0]},) {window.dtype} tensor on {window.device} like the "
                f"window's first column, got {tuple(out.shape)} {out.dtype} on {out.device}"
            )
        return self._chunked(window, self.predict_kernel(horizon), chunk_size, (), out)

    def predict_path(self, window: Tensor, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
        """(N, input_length) -> (N, len(horizons)): the values at all of `horizons`."""
        self.check_window(window)
        return self._chunked(window, lambda w, out: out.copy_(self(w)), chunk_size, (len(self.horizons),))

    def predict_kernel(self, horizon: int) -> Kernel:
        """The function `predict` applies to each chunk (called under no_grad, in the compute
        dtype/device): `kernel(window (c, L), out (c,))` writes `extrapolate(window, horizon)`
        into `out`. Built once per `predict` call, so that it may hold state derived from the
        current parameters (fused weights, scratch buffers)."""
        return lambda window, out: out.copy_(self.extrapolate(window, horizon))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())

    def check_window(self, window: Tensor) -> None:
        """Raise `ValueError` unless `window` is a floating (N, input_length) tensor."""
        if window.dim() != 2 or window.shape[1] != self.input_length:
            raise ValueError(
                f"predictor {self.kind!r} takes windows of shape (N, {self.input_length}), "
                f"got {tuple(window.shape)}"
            )
        if not window.is_floating_point():
            raise ValueError(f"windows must be floating point, got {window.dtype}")

    def check_target(self, window: Tensor, target: Tensor) -> Tensor:
        """Validate a training pair; return the target as (N, len(horizons))."""
        self.check_window(window)
        width = len(self.horizons)
        if target.dim() == 1 and width == 1:
            target = target[:, None]
        if target.shape != (window.shape[0], width):
            raise ValueError(
                f"predictor {self.kind!r} needs targets of shape ({window.shape[0]}, {width})"
                + (f" or ({window.shape[0]},)" if width == 1 else "")
                + f" for {window.shape[0]} windows, got {tuple(target.shape)}"
            )
        return target

    def _chunked(
        self,
        window: Tensor,
        kernel: Kernel,
        chunk_size: int,
        width: tuple[int, ...],
        out: Tensor | None = None,
    ) -> Tensor:
        """Run `kernel` chunk by chunk under no_grad, in the parameters' dtype/device (trainable
        predictors) or at least float32 (rule-based), into one (N, *width) output in the window's
        dtype/device (`out`, or a new tensor), written in place: the only memory beyond it is one
        chunk's conversion copies and the kernel's own scratch."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        param = next(self.parameters(), None)
        if param is not None:
            dtype, device = param.dtype, param.device
        else:
            dtype, device = torch.promote_types(window.dtype, torch.float32), window.device
        if out is None:
            out = torch.empty((window.shape[0], *width), dtype=window.dtype, device=window.device)
        direct = dtype == window.dtype and device == window.device
        with torch.no_grad():
            for begin in range(0, window.shape[0], chunk_size):
                chunk, target = window[begin : begin + chunk_size], out[begin : begin + chunk_size]
                if direct:
                    kernel(chunk, target)
                else:  # compute in the predictor's dtype/device, then convert back
                    result = torch.empty(target.shape, dtype=dtype, device=device)
                    kernel(chunk.to(device=device, dtype=dtype), result)
                    target.copy_(result)
        return out


class RuleBasedPredictor(Predictor):
    """A fixed rule without parameters that extrapolates to any horizon >= 1; subclasses
    implement `extrapolate(window, horizon)`."""

    trainable = False

    def supports_horizon(self, horizon: int) -> bool:
        return horizon >= 1

    def forward(self, window: Tensor) -> Tensor:
        """(N, L) -> (N, 1) value `horizon` steps after the last input."""
        return self.extrapolate(window, self.horizon)[:, None]


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator: register a `Predictor` subclass in `PREDICTORS` under its `kind`."""
    if not (isinstance(cls, type) and issubclass(cls, Predictor) and cls.kind):
        raise TypeError(f"{cls!r} must be a Predictor subclass with a non-empty `kind`")
    return PREDICTORS.register(cls.kind)(cls)


def build_predictor(kind: str, **config: Any) -> Predictor:
    """Build the predictor registered as `kind` from its config (e.g. `p.config`)."""
    cls = PREDICTORS.get(kind)
    try:
        inspect.signature(cls).bind(**config)
    except TypeError:
        valid = list(inspect.signature(cls).parameters)
        raise ConfigError(
            f"bad config keys {sorted(config)} for predictor {kind!r}; valid keys: {valid}"
        ) from None
    return cls(**config)
