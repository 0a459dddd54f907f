"""weightcast's shared core: the registries of architectures, tasks, optimizers, schedules,
augmentations and initializations, the layer-type map, the tracker, and the one training loop.

Pipeline: **zoo** <- collect <- train_predictor <- eval.

Importing this package loads nothing: each name below is imported from its module on first use
(PEP 562), so a module that needs the layer types (the runtime) does not load every task. The
training loop itself is `weightcast.zoo.train.train`: here, `train` is its module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightcast._lazy import lazy_exports

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
        ["EpochRecord", "History", "Hook", "TrainConfig", "TrainResult", "TrainState"], "weightcast.zoo.train"
    ),
}

if TYPE_CHECKING:
    from weightcast.zoo.config import ConfigError, load_config
    from weightcast.zoo.models import ARCHITECTURES, count_parameters, create_model
    from weightcast.zoo.registry import Registry, UnknownNameError
    from weightcast.zoo.tasks import TASKS, Task, TaskSpec, get_task
    from weightcast.zoo.train import EpochRecord, History, Hook, TrainConfig, TrainResult, TrainState

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
