"""The nowcaster's guard (the `eval` stage's runtime): how much of a predicted jump to keep, judged
by a probe loss. Pure functions of the probe losses: `Nowcaster` writes the weights and runs the
probe, these decide.

Rules (`NowcastConfig.guard_rule`):
- "line-search" (the default): the probe loss is measured at scales of the predicted step, the
  largest first (1, 0.5, 0.25 by default), until a scale does not raise the loss above its value
  before the jump, or is worse than the larger scale before it (the loss along the step is taken
  to be unimodal). The scale with the lowest loss is kept if that loss is within the allowed rise,
  else the jump is rolled back. With `expand`, twice the largest scale is tried too when the
  largest did not raise the loss (a jump that undershoots). A full jump that does not raise the
  loss costs two probes, as under the veto; a jump that lands ahead of the trajectory but
  slightly off it is kept at the scale that stays on it, instead of being thrown away.
- "veto" (the rule before): one probe at scale 1, kept if within the allowed rise.

Allowed rise: `max(tolerance * |before|, noise_tolerance * noise)`, where `noise` is the probe
loss's own fluctuation along the trajectory (`trajectory_noise`: the residual standard deviation
of a straight-line fit through the probe losses at the window's snapshots), so that a loss that
jitters by more than `tolerance` between snapshots does not veto every jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["GUARD_RULES", "SearchResult", "allowed_rise", "line_search", "trajectory_noise"]

GUARD_RULES = ("line-search", "veto")


@dataclass
class SearchResult:
    """The kept scale (0.0: rolled back) and its probe loss, and every (scale, loss) probed."""

    scale: float
    loss: float
    tried: list[tuple[float, float]] = field(default_factory=list)


def allowed_rise(before: float, tolerance: float, noise: float = 0.0, noise_tolerance: float = 0.0) -> float:
    """How far above `before` the probe loss of a kept jump may be (module docstring)."""
    return max(tolerance * abs(before), noise_tolerance * noise)


def line_search(
    loss_at: Callable[[float], float],
    before: float,
    scales: Sequence[float],
    rise: float,
    *,
    expand: bool = False,
) -> SearchResult:
    """Probe `loss_at(scale)` (the weights written at `scale` x the predicted step) at `scales`,
    largest first, until one does not raise the loss above `before` or is worse than the scale
    before it; with `expand`, also at 2 x the largest when that one did not raise the loss. Keep
    the scale with the lowest finite loss if that loss is <= before + rise, else roll back."""
    ordered = sorted(set(scales), reverse=True)
    tried: list[tuple[float, float]] = []
    for scale in ordered:
        loss = loss_at(scale)
        tried.append((scale, loss))
        if loss <= before or (len(tried) > 1 and _worse(loss, tried[-2][1])):
            break
    if expand and tried[0][1] <= before:
        tried.append((2 * ordered[0], loss_at(2 * ordered[0])))
    finite = [(scale, loss) for scale, loss in tried if math.isfinite(loss)]
    if not finite:
        return SearchResult(0.0, math.nan, tried)
    scale, loss = min(finite, key=lambda item: (item[1], -item[0]))  # ties: the larger step
    return SearchResult(scale if loss <= before + rise else 0.0, loss, tried)


def trajectory_noise(losses: Sequence[float]) -> float:
    """The residual standard deviation of a least-squares line through `losses` (one per snapshot,
    equally spaced); 0.0 with fewer than 3 values or a non-finite one."""
    values = np.asarray(losses, dtype=np.float64)
    if len(values) < 3 or not np.isfinite(values).all():
        return 0.0
    steps = np.arange(len(values))
    residuals = values - np.polyval(np.polyfit(steps, values, 1), steps)
    return float(np.sqrt((residuals**2).sum() / (len(values) - 2)))


def _worse(loss: float, than: float) -> bool:
    """`loss` is above `than`, a non-finite loss being worse than any finite one."""
    if not math.isfinite(loss):
        return math.isfinite(than)
    return math.isfinite(than) and loss > than
