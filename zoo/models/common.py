"""Small helpers shared by the architecture families of the zoo (`zoo.models.*`): checking
architecture kwargs, scaling channel counts by a width multiplier, and reading a signal as a
sequence of time steps."""

from __future__ import annotations

import torch

from weightcast.zoo.config import ConfigError

__all__ = ["check_min", "scale_channels", "signal_steps"]


def check_min(arch: str, **values: tuple[float, float]) -> None:
    """Raise `ConfigError` unless every kwarg value is a number >= its minimum.

    Called as `check_min("mlp", depth=(depth, 0), width=(width, 1))`: each kwarg maps to
    `(value, minimum)`."""
    for name, (value, minimum) in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise ConfigError(
                f"architecture {arch!r}: {name} must be a number >= {minimum}, got {value!r}"
            )


def scale_channels(channels: int, width: float, divisor: int = 1) -> int:
    """`channels * width` rounded to the nearest multiple of `divisor`, at least `divisor`."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


def signal_steps(x: torch.Tensor) -> torch.Tensor:
    """A signal batch (N, C, L) as L time steps of C features: (N, L, C)."""
    return x.transpose(1, 2)
