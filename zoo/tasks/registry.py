"""The task registry. Every entry is a factory `f(data_dir: str | None) -> Task`; its metadata
repeats the task's modality, split and input kind so that listing tasks builds no data."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from weightcast.zoo.registry import Registry
from weightcast.zoo.tasks.base import Task

__all__ = ["TASKS", "get_task"]

TaskFactory = Callable[[str | None], Task]

# metadata: modality, split, input_kind, needs_data_dir (bool, file-based tasks)
TASKS: Registry[TaskFactory] = Registry("task")


def get_task(name: str, data_dir: str | Path | None = None) -> Task:
    """Build (once per process, then cached) the task `name`; file-based tasks read `data_dir`."""
    TASKS.check(name)
    return _cached_task(name, None if data_dir is None else str(data_dir))


@functools.lru_cache(maxsize=16)
def _cached_task(name: str, data_dir: str | None) -> Task:
    task = TASKS.get(name)(data_dir)
    meta = TASKS.metadata(name)
    assert (task.modality, task.split, task.spec.input_kind) == (
        meta["modality"], meta["split"], meta["input_kind"]
    ), f"registry metadata of task {name!r} disagrees with the task it builds"
    return task
