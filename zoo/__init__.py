"""weightcast's shared core: the registries of architectures, tasks, optimizers, schedules,
augmentations and initializations, the layer-type map, the tracker, and the one training loop.

Pipeline: **zoo** <- collect <- train_predictor <- eval.

Importing this package loads nothing: each name below is imported from its module on first use
(PEP 562), so a module that needs the layer types (the runtime) does not load every task.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ARCHITECTURES",
    "TASKS",
    "ConfigError",
    "EpochRecord",
    "History",
    "Hook",
    "Registry",
    "Task",
    "TaskSpec",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "UnknownNameError",
    "count_parameters",
    "create_model",
    "get_task",
    "load_config",
    "train",
]

# public name -> the module that defines it
_LAZY = {
    "ConfigError": "weightcast.zoo.config",
    "load_config": "weightcast.zoo.config",
    "ARCHITECTURES": "weightcast.zoo.models",
    "count_parameters": "weightcast.zoo.models",
    "create_model": "weightcast.zoo.models",
    "Registry": "weightcast.zoo.registry",
    "UnknownNameError": "weightcast.zoo.registry",
    "TASKS": "weightcast.zoo.tasks",
    "Task": "weightcast.zoo.tasks",
    "TaskSpec": "weightcast.zoo.tasks",
    "get_task": "weightcast.zoo.tasks",
    **dict.fromkeys(
        ["EpochRecord", "History", "Hook", "TrainConfig", "TrainResult", "TrainState", "train"], "weightcast.zoo.train"
    ),
}

if TYPE_CHECKING:
    from weightcast.zoo.config import ConfigError, load_config
    from weightcast.zoo.models import ARCHITECTURES, count_parameters, create_model
    from weightcast.zoo.registry import Registry, UnknownNameError
    from weightcast.zoo.tasks import TASKS, Task, TaskSpec, get_task
    from weightcast.zoo.train import EpochRecord, History, Hook, TrainConfig, TrainResult, TrainState, train


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'weightcast.zoo' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
