"""What the `eval` stage's runtime counts: a `Nowcaster`'s `stats` (`NowcastStats`), its calls,
attempted jumps by outcome (`OUTCOMES`), skips and seconds, and one `Jump` record per attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

__all__ = ["OUTCOMES", "Jump", "NowcastStats"]

# What an attempted jump came to; each is a `NowcastStats` counter. rolled_back_error: an exception
# (OOM, KeyboardInterrupt) inside the attempt, after which the weights are restored and it propagates.
# rolled_back_lookahead: kept at first, undone at the next snapshot (NowcastConfig.lookahead).
OUTCOMES = (
    "accepted", "rolled_back_guard", "rolled_back_lookahead", "rolled_back_nonfinite", "rolled_back_error"
)


@dataclass
class Jump:
    """One attempted jump: at which call, its outcome (one of `OUTCOMES`), the probe losses."""

    call: int
    outcome: str
    probe_before: Optional[float] = None  # None when the guard is off or predictions were non-finite
    probe_after: Optional[float] = None  # at the kept scale; rolled back: the lowest loss probed
    seconds: float = 0.0  # prediction, probes and writing included
    horizon: Optional[int] = None  # snapshot intervals ahead it was predicted
    scale: float = 1.0  # the fraction of the predicted step kept (0.0: rolled back)
    probes: int = 0  # probe-loss evaluations it took
    probe_lookahead: Optional[float] = None  # with lookahead: the probe loss one snapshot interval later


@dataclass
class NowcastStats:
    """A `Nowcaster`'s counters; each of `OUTCOMES` is one, and `jumps` holds every attempt."""

    calls: int = 0
    attempted: int = 0
    accepted: int = 0
    rolled_back_guard: int = 0
    rolled_back_lookahead: int = 0
    rolled_back_nonfinite: int = 0
    rolled_back_error: int = 0
    skipped: int = 0  # due jumps not attempted: their cost would not pay (NowcastConfig.min_payoff)
    seconds: float = 0.0  # total time spent in the nowcaster's calls (and its construction)
    probe_seconds: float = 0.0  # the part of `seconds` spent in the probe
    jumps: list[Jump] = field(default_factory=list)
