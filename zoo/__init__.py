"""weightcast's shared core: the registries of architectures, tasks, optimizers, schedules,
augmentations and initializations, the layer-type map, and the one training loop.

Pipeline: **zoo** <- collect <- train_predictor <- eval.
"""

from weightcast.zoo.config import ConfigError, load_config
from weightcast.zoo.models import ARCHITECTURES, count_parameters, create_model
from weightcast.zoo.registry import Registry, UnknownNameError
from weightcast.zoo.tasks import TASKS, Task, TaskSpec, get_task
from weightcast.zoo.train import EpochRecord, History, Hook, TrainConfig, TrainResult, TrainState, train

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
