"""The architecture registry. Every entry is a factory `f(spec: TaskSpec, **kwargs) -> nn.Module`
that adapts to the task's input shape and number of outputs; its metadata says which input kinds
and objectives it accepts."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from weightcast.zoo.config import ConfigError
from weightcast.zoo.registry import Registry
from weightcast.zoo.tasks.base import TaskSpec

__all__ = ["ARCHITECTURES", "create_model", "is_compatible", "count_parameters"]

ArchitectureFactory = Callable[..., nn.Module]

# metadata: inputs (tuple of input kinds), objectives (tuple, default classification+regression),
#           default_task (task name used by `weightcast zoo list` for parameter counts)
ARCHITECTURES: Registry[ArchitectureFactory] = Registry("architecture")

_DEFAULT_OBJECTIVES = ("classification", "regression")


def is_compatible(arch: str, spec: TaskSpec) -> bool:
    meta = ARCHITECTURES.metadata(arch)
    return spec.input_kind in meta["inputs"] and spec.objective in meta.get(
        "objectives", _DEFAULT_OBJECTIVES
    )


def create_model(arch: str, spec: TaskSpec, **kwargs: Any) -> nn.Module:
    """Build architecture `arch` for a task with `spec`; raises `ConfigError` if they do not fit."""
    factory = ARCHITECTURES.get(arch)
    if not is_compatible(arch, spec):
        meta = ARCHITECTURES.metadata(arch)
        raise ConfigError(
            f"architecture {arch!r} takes inputs {meta['inputs']} with objectives "
            f"{meta.get('objectives', _DEFAULT_OBJECTIVES)}, but the task has "
            f"{spec.input_kind!r} inputs and a {spec.objective!r} objective"
        )
    try:
        return factory(spec, **kwargs)
    except TypeError as err:
        raise ConfigError(f"bad arch_kwargs {kwargs} for architecture {arch!r}: {err}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
