"""The nowcaster's guard (the `eval` stage's runtime): how much of a predicted jump to keep, judged
by a probe loss. Pure functions of the probe losses: `Nowcaster` writes the weights and runs the
probe, these decide.

Rules (`NowcastConfig.guard_rule`):
- "line-search" (the default): backtracking along the predicted step. The probe loss is measured
  at scales of the step, the largest first (1, 0.5, 0.25 by default), and the first scale within
  the allowed rise is kept; if none is, the jump is rolled back. A full jump within the allowed
  rise costs two probes, as under the veto; one that lands ahead of the trajectory but too far off
  it is kept at a smaller scale instead of being thrown away. Measured: keeping the scale with
  the LOWEST probe loss instead favours small steps (the loss right after a jump is pessimistic
  about large ones) and gave up most of the gain. With `expand`, a full step that lowered the loss
  is doubled if that lowers it further.
- "veto" (the rule before): one probe at scale 1, kept if within the allowed rise.
- "accept": the full step, kept without a probe right after it; with `lookahead`, the only test
  is the one below.

Look-ahead (`NowcastConfig.lookahead`): a kept jump is judged again at the next snapshot, after
the optimizer has trained from it for one snapshot interval: if the probe loss is then above its
value before the jump by more than `tolerance`, the weights and the optimizer state are restored
to what they were before the jump (the interval's training is lost). `confirmed` decides.

Allowed rise: the largest of
- `tolerance * |before|`, a relative rise (1% by default);
- `progress_tolerance * progress`, where `progress` is how much the probe loss fell over the
  period before the jump (from the last attempt to now; before the first attempt, from the
  window's oldest snapshot, probed at the first jump): a jump may cost at most that fraction of
  one period's progress. The probe loss is a training loss that shrinks by orders of magnitude,
  and a jump that lands ahead of the trajectory but slightly off it raises it for a few steps.
  Measured right after full jumps (LeNet-5 on digits with AdamW, a 1-D CNN on MNIST-1D with SGD
  and momentum): WNN jumps that went on to pay off raised it by 0% to 125% of its value, harmful
  linear-fit jumps by 4x to 85x. Below 1, accepted rises cannot ratchet up: a rise accepted now
  counts as progress in the next period only by that fraction. Counted from construction, the
  first period's credit held the steep fall of the first steps: on a character-level transformer
  it let through first jumps that tripled the loss and cost the run its final quality under every
  predictor (the zero-shot suite's line fit: 0.93x with it, 1.03x and quality kept on all 8 tasks
  without);
- `noise_tolerance * noise`, where `noise` is the probe loss's own fluctuation along the
  trajectory (`trajectory_noise`: the residual standard deviation of a straight line through the
  probe losses at the window's snapshots; costs a probe per snapshot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GUARD_RULES", "SearchResult", "allowed_rise", "confirmed", "line_search", "trajectory_noise"]

GUARD_RULES = ("line-search", "veto", "accept")


@dataclass
class SearchResult:
    """The kept scale (0.0: rolled back) and its probe loss, and every (scale, loss) probed."""

    scale: float
    loss: float
    tried: list[tuple[float, float]] = field(default_factory=list)


def allowed_rise(
    before: float,
    tolerance: float,
    *,
    progress: float = 0.0,
    progress_tolerance: float = 0.0,
    noise: float = 0.0,
    noise_tolerance: float = 0.0,
) -> float:
    """How far above `before` the probe loss of a kept jump may be (module docstring)."""
    progress = progress if math.isfinite(progress) and progress > 0 else 0.0  # no fall, no credit
    return max(tolerance * abs(before), progress_tolerance * progress, noise_tolerance * noise)


def confirmed(before: float, later: float, tolerance: float) -> bool:
    """The look-ahead's verdict on a kept jump: the probe loss one snapshot interval after it,
    `later`, is finite and within `tolerance` (relative) of `before`, its value before the jump."""
    return math.isfinite(later) and later <= before + tolerance * abs(before)


def line_search(
    loss_at: Callable[[float], float],
    before: float,
    scales: Sequence[float],
    rise: float,
    *,
    expand: bool = False,
) -> SearchResult:
    """Backtracking along the predicted step: probe `loss_at(scale)` (the weights written at
    `scale` x the step) at `scales`, largest first, and keep the first scale whose loss is finite
    and <= before + rise; none: roll back (scale 0.0, the lowest loss probed). With `expand`, a
    kept largest scale that lowered the loss is doubled if that lowers it further."""
    ordered = sorted(set(scales), reverse=True)
    tried: list[tuple[float, float]] = []
    for scale in ordered:
        loss = loss_at(scale)
        tried.append((scale, loss))
        if math.isfinite(loss) and loss <= before + rise:
            if expand and scale == ordered[0] and loss < before:
                bigger = loss_at(2 * scale)
                tried.append((2 * scale, bigger))
                if math.isfinite(bigger) and bigger <= loss:
                    return SearchResult(2 * scale, bigger, tried)
            return SearchResult(scale, loss, tried)
    finite = [loss for _, loss in tried if math.isfinite(loss)]
    return SearchResult(0.0, min(finite) if finite else math.nan, tried)


def trajectory_noise(losses: Sequence[float]) -> float:
    """The residual standard deviation of a least-squares line through `losses` (one per snapshot,
    equally spaced); 0.0 with fewer than 3 values or a non-finite one."""
    values = np.asarray(losses, dtype=np.float64)
    if len(values) < 3 or not np.isfinite(values).all():
        return 0.0
    steps = np.arange(len(values))
    residuals = values - np.polyval(np.polyfit(steps, values, 1), steps)
    return float(np.sqrt((residuals**2).sum() / (len(values) - 2)))
