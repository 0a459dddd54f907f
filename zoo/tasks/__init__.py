"""The zoo's tasks: data + loss + metric + split, looked up by name in `TASKS`.

Importing this package registers every task: built-in ones (generated or bundled, offline and
deterministic) and file-based ones that read MNIST / Fashion-MNIST / CIFAR from a local folder.
"""

from weightcast.zoo.tasks import files, mnist1d, sklearn_data, synthetic, text, timeseries  # noqa: F401  (registration)
from weightcast.zoo.tasks.base import (
    INPUT_KINDS,
    MODALITIES,
    SPLITS,
    Split,
    Task,
    TaskSpec,
    task_loss,
    task_metric,
)
from weightcast.zoo.tasks.registry import TASKS, get_task

__all__ = [
    "INPUT_KINDS",
    "MODALITIES",
    "SPLITS",
    "Split",
    "TASKS",
    "Task",
    "TaskSpec",
    "get_task",
    "task_loss",
    "task_metric",
]
