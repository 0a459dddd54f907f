"""The configuration of the `eval` stage's runtime: `NowcastConfig`, how a `Nowcaster`
(`eval.runtime.nowcaster`) applies a predictor bundle, checked when it is made and resolved against
a bundle's window by `NowcastConfig.for_bundle`, and `horizon_schedule`, how far each jump of a
resolved config goes."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from weightcast.eval.runtime.guard import GUARD_RULES
from weightcast.eval.runtime.optimizer_policy import OPTIMIZER_POLICIES
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.predictors import DEFAULT_CHUNK_SIZE
from weightcast.zoo.config import ConfigError
from weightcast.zoo.layer_types import LAYER_TYPES

__all__ = ["BUFFER_DTYPES", "HORIZON_SCHEDULES", "MODES", "NowcastConfig", "horizon_schedule"]

MODES = ("nowcast", "farcast")
HORIZON_SCHEDULES = ("constant", "nino")
BUFFER_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


@dataclass
class NowcastConfig:
    """How a `Nowcaster` applies its bundle (see `eval.runtime.nowcaster`). None = from the bundle."""

    mode: str = "nowcast"  # nowcast: jump every `period` calls; farcast: once, after `farcast_after`
    # nowcast: calls between jumps, a multiple of snapshot_every holding >= the bundle's input_length
    # snapshots; default input_length * snapshot_every
    period: Optional[int] = None
    # snapshot intervals ahead a jump goes (= calls when snapshot_every is 1); default the bundle's
    # horizon (its farthest); the largest k of the "nino" schedule
    horizon: Optional[int] = None
    farcast_after: Optional[int] = None  # farcast: calls before the jump; default (input_length - 1) x every
    snapshot_every: int = 1  # calls between snapshots (NiNo, called every step: period // input_length)
    # constant | nino: jump j goes k_j = round(linspace(horizon**0.5, 1, max_calls // period)**2)[j] ahead
    horizon_schedule: str = "constant"
    max_calls: Optional[int] = None  # nino schedule: calls in the whole run (e.g. its optimizer steps)
    optimizer_policy: str = "keep"  # keep | reset | rescale
    momentum_scale: float = 0.5  # rescale: factor on the first-moment buffers
    guard: bool = True  # judge every jump by the probe loss (eval.runtime.guard); False: keep them all
    guard_rule: str = "line-search"  # line-search | veto | accept (eval.runtime.guard)
    # Judge a kept jump again at the next snapshot: if the probe loss has not come back to its value
    # before the jump (within `tolerance`), restore the weights and optimizer state from before it.
    lookahead: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])  # line-search: fractions of a step
    expand: bool = False  # line-search: also try 2x a full step that lowered the loss
    # The allowed rise of the probe loss is the largest of: tolerance x |before|; progress_tolerance x
    # its fall over the period before the jump; noise_tolerance x its noise (costs a probe per snapshot).
    tolerance: float = 0.01
    progress_tolerance: float = 0.5
    noise_tolerance: float = 0.0
    # > 0: skip a due jump unless the training time it stands to save (horizon snapshot intervals, timed
    # between calls) is >= min_payoff x the measured cost of a jump (e.g. 10); 0 (default): never skip,
    # so that which jumps a run makes does not depend on timing (reproducible, resumable exactly)
    min_payoff: float = 0.0
    buffer_dtype: str = "float32"  # float32 | float64 | float16 | bfloat16
    buffer_device: str = "cpu"
    chunk_size: int = DEFAULT_CHUNK_SIZE  # scalars per predict call
    layer_types: Optional[list[str]] = None  # predict only these layer types; None = all the model has

    def __post_init__(self) -> None:
        choices = (("mode", MODES), ("optimizer_policy", OPTIMIZER_POLICIES), ("buffer_dtype", BUFFER_DTYPES))
        for name, valid in choices:
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {getattr(self, name)!r}")
        if self.guard_rule not in GUARD_RULES:
            raise ConfigError(f"guard_rule must be one of {', '.join(GUARD_RULES)}; got {self.guard_rule!r}")
        if self.horizon_schedule not in HORIZON_SCHEDULES:
            raise ConfigError(
                f"horizon_schedule must be one of {', '.join(HORIZON_SCHEDULES)}; "
                f"got {self.horizon_schedule!r}"
            )
        for name in ("period", "horizon", "farcast_after", "max_calls"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or None for the bundle's default), got {value}")
        if self.snapshot_every < 1:
            raise ConfigError(f"snapshot_every must be >= 1, got {self.snapshot_every}")
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ConfigError(f"scales must be a non-empty list of numbers > 0, got {list(self.scales)}")
        for name in ("progress_tolerance", "noise_tolerance", "min_payoff"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(
                f"tolerance is a relative rise of the probe loss, a number >= 0; got {self.tolerance}"
            )
        if not (math.isfinite(self.momentum_scale) and self.momentum_scale >= 0):
            raise ConfigError(f"momentum_scale must be a number >= 0, got {self.momentum_scale}")
        try:
            torch.device(self.buffer_device)
        except RuntimeError:
            raise ConfigError(
                f"buffer_device must be a torch device (cpu, cuda, cuda:N), got {self.buffer_device!r}"
            ) from None
        if self.layer_types is not None:
            unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if unknown or not self.layer_types:
                raise ConfigError(
                    f"layer_types must be a non-empty list of {', '.join(LAYER_TYPES)} (or None for all); "
                    f"got {list(self.layer_types)}"
                )

    def for_bundle(self, bundle: PredictorBundle) -> NowcastConfig:
        """This config with the bundle's defaults filled in, checked against its window."""
        window, every = bundle.input_length, self.snapshot_every
        spacing = "" if every == 1 else f" (one snapshot every {every} calls)"
        period = window * every if self.period is None else self.period
        farcast_after = (window - 1) * every if self.farcast_after is None else self.farcast_after
        due_name, due = ("period", period) if self.mode == "nowcast" else ("farcast_after", farcast_after)
        if due % every:
            raise ConfigError(
                f"{due_name}={due} is not a multiple of snapshot_every={every}: a jump must fall on a "
                f"snapshot; use {due_name}={max(1, round(due / every)) * every}"
            )
        if self.mode == "nowcast" and period // every < window:
            raise ConfigError(
                f"period={period} is shorter than the bundle's window of {window} snapshots{spacing}: a jump "
                f"needs {window} snapshots taken since the previous jump; use period >= {window * every}"
            )
        if self.mode == "farcast" and farcast_after // every + 1 < window:
            raise ConfigError(
                f"farcast_after={farcast_after} calls give {farcast_after // every + 1} snapshots (the "
                f"start and one per {'call' if every == 1 else f'{every} calls'}), fewer than the bundle's "
                f"window of {window}; use farcast_after >= {(window - 1) * every}"
            )
        horizon = bundle.horizon if self.horizon is None else self.horizon
        return dataclasses.replace(self, period=period, horizon=horizon, farcast_after=farcast_after)


def horizon_schedule(config: NowcastConfig) -> list[int]:
    """The horizon of each jump of a resolved config (`NowcastConfig.for_bundle`), in snapshot
    intervals: jump j goes entry min(j, len - 1) ahead. "constant": [horizon]; "nino": NiNo's
    decreasing k = round(linspace(horizon ** 0.5, 1, max_calls // period) ** 2)
    (`train_predictor.predictors.nino.nino_horizon_schedule`)."""
    if config.horizon_schedule == "constant":
        return [config.horizon]
    if config.max_calls is None:
        raise ConfigError(
            "horizon_schedule='nino' needs max_calls, the run's length in calls (its optimizer steps "
            "when called every step), to lay out its decreasing horizons"
        )
    from weightcast.train_predictor.predictors.nino import nino_horizon_schedule

    period = config.period if config.mode == "nowcast" else config.farcast_after
    return nino_horizon_schedule(config.max_calls, period, config.horizon)
