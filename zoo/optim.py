"""Optimizers and learning-rate schedules of the zoo, each a registry entry.

Schedules are multipliers of the base lr as a function of the optimizer step, so that warm-up and
cosine decay are smooth within an epoch; the training loop steps them once per batch.
"""

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from weightcast.zoo.registry import Registry

__all__ = ["OptimizerConfig", "ScheduleConfig", "OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_schedule"]


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999  # adam, adamw

    def __post_init__(self) -> None:
        OPTIMIZERS.check(self.name)


@dataclass
class ScheduleConfig:
    name: str = "constant"
    warmup_epochs: float = 0.0  # warmup-cosine: linear ramp from 0 over this many epochs
    step_epochs: int = 10  # step: multiply by gamma every step_epochs epochs
    gamma: float = 0.1
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the base lr

    def __post_init__(self) -> None:
        SCHEDULES.check(self.name)


OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], OptimizerConfig], torch.optim.Optimizer]
# A schedule factory gets (config, total_steps, steps_per_epoch) and returns step -> lr multiplier.
ScheduleFactory = Callable[[ScheduleConfig, int, int], Callable[[int], float]]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[ScheduleFactory] = Registry("schedule")


@OPTIMIZERS.register("sgd", description="SGD with momentum (Nesterov optional)")
def sgd(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


@OPTIMIZERS.register("adam", description="Adam (L2 weight decay)")
def adam(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw", description="AdamW (decoupled weight decay)")
def adamw(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("rmsprop", description="RMSprop with momentum")
def rmsprop(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@SCHEDULES.register("constant", description="the base lr throughout")
def constant(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda step: 1.0


@SCHEDULES.register("step", description="lr x gamma every step_epochs epochs")
def step(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    every = cfg.step_epochs * steps_per_epoch
    return lambda s: cfg.gamma ** (s // every)


@SCHEDULES.register("cosine", description="cosine decay from the base lr to min_lr_ratio x lr")
def cosine(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda s: _cosine(s / max(total_steps, 1), cfg.min_lr_ratio)


@SCHEDULES.register("warmup-cosine", description="linear warm-up over warmup_epochs, then cosine decay")
def warmup_cosine(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def multiplier(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return _cosine((s - warmup) / max(total_steps - warmup, 1), cfg.min_lr_ratio)

    return multiplier


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, cfg)


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, SCHEDULES.get(cfg.name)(cfg, total_steps, steps_per_epoch)
    )


def _cosine(progress: float, floor: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
