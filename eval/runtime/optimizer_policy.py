"""What the `eval` stage's runtime does to the optimizer state of the parameters an accepted jump
moved (`NowcastConfig.optimizer_policy`):
- "keep" (the papers): unchanged.
- "reset": every tensor in the parameter's state is zeroed, Adam's `step` included, which is
  exactly the state a fresh Adam/AdamW starts from (its bias correction starts over: keeping
  `step` with zeroed moments would inflate the next updates up to ~3x for hundreds of steps);
  for SGD a zero momentum buffer (a fresh one, with dampening 0).
- "rescale": the first-moment buffers (`momentum_buffer` of SGD/RMSprop, `exp_avg` of
  Adam/AdamW/NAdam/RAdam/Adamax) are multiplied by `momentum_scale` (0.5 by default), damping the
  momentum that drove the pre-jump trajectory; second moments (`exp_avg_sq`, ...) and `step` are
  kept, since the gradients' scale changes little over one jump.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor
from weightcast.zoo.config import ConfigError

__all__ = ["FIRST_MOMENT_KEYS", "OPTIMIZER_POLICIES", "apply_optimizer_policy"]

OPTIMIZER_POLICIES = ("keep", "reset", "rescale")
# Optimizer-state keys of first-moment (momentum) buffers, the ones "rescale" scales.
FIRST_MOMENT_KEYS = ("momentum_buffer", "exp_avg")


def apply_optimizer_policy(
    optimizer: torch.optim.Optimizer | None,
    params: Iterable[Tensor],
    policy: str,
    momentum_scale: float = 0.5,
) -> None:
    """Apply `policy` (one of `OPTIMIZER_POLICIES`, defined in the module docstring) to the
    optimizer state of `params`; parameters without state are skipped."""
    if policy not in OPTIMIZER_POLICIES:
        raise ConfigError(f"optimizer policy must be one of {', '.join(OPTIMIZER_POLICIES)}; got {policy!r}")
    if policy == "keep" or optimizer is None:
        return
    with torch.no_grad():
        for param in params:
            for key, value in optimizer.state.get(param, {}).items():
                if not torch.is_tensor(value):
                    continue
                if policy == "reset":
                    value.zero_()
                elif key in FIRST_MOMENT_KEYS:
                    value.mul_(momentum_scale)
