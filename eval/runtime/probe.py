"""The probe loss that the `eval` stage's runtime guard judges jumps by (`eval.runtime.guard`
decides, `Nowcaster` writes the weights): a callable `module -> loss`, or `probe_batch` for one
fixed batch, and `evaluate_probe`, one evaluation of it.

A probe is evaluated under no_grad in eval mode, except for BatchNorm layers, which normalize with
the probe batch's own statistics: their running statistics were gathered under the pre-jump
weights, so in eval mode they would count against every jump. Their buffers are restored after
the probe, and every module's train/eval mode too. A probe must return one number: a Python
number or a one-element tensor; anything else is a `ConfigError`.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from weightcast.zoo.config import ConfigError

__all__ = ["LossFn", "ProbeLoss", "evaluate_probe", "probe_batch"]

ProbeLoss = Callable[[nn.Module], Union[float, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


def probe_batch(inputs: Tensor, targets: Tensor, loss_fn: LossFn) -> ProbeLoss:
    """A probe loss for the guard: `loss_fn(model(inputs), targets)` on one fixed batch, moved
    to the model's device when needed."""

    def probe(model: nn.Module) -> float:
        device = next(model.parameters()).device
        return float(loss_fn(model(inputs.to(device)), targets.to(device)))

    return probe


def evaluate_probe(probe: ProbeLoss, module: nn.Module) -> float:
    """`probe(module)` as a float, under no_grad, in eval mode but for BatchNorm layers, which
    normalize with the probe batch's statistics (module docstring); every module's mode and the
    BatchNorm running statistics are restored afterwards, also when the probe raises."""
    modes = [(m, m.training) for m in module.modules()]
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    module.eval()
    for norm in norms:
        norm.train()
    try:
        with torch.no_grad():
            return _scalar(probe(module))
    finally:
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for norm, buffers in zip(norms, saved):
                for buffer, backup in zip(norm.buffers(recurse=False), buffers):
                    buffer.copy_(backup)


def _scalar(value: Any) -> float:
    """A probe's loss as a float: a Python number or a one-element tensor, else ConfigError."""
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ConfigError(
                f"the probe returned a tensor of shape {tuple(value.shape)}; it must return one number, "
                "the loss (reduce it, e.g. loss_fn(..., reduction='mean'))"
            )
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"the probe returned a {type(value).__name__}; it must return one number, the loss")
