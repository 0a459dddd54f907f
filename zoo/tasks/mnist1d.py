"""Built-in MNIST-1D tasks (`mnist1d`, `mnist1d-large`), generated offline by the `mnist1d`
package's `make_dataset` (never its `get_dataset`, which downloads and writes a pickle into the
working directory). Part of **zoo**, the collection's default training tasks.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from weightcast.zoo.tasks.base import Task, TaskSpec, standardize
from weightcast.zoo.tasks.registry import TASKS

__all__ = ["make_mnist1d", "mnist1d", "mnist1d_large"]


def make_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    """The package's generator with its default arguments except `num_samples` and `seed`:
    {'x': (0.8 n, 40), 'y': (0.8 n,), 'x_test': (0.2 n, 40), 'y_test': (0.2 n,)}."""
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: keep it lazy

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    # make_dataset reseeds the global `random` and `np.random` generators; put them back so that
    # building a task never changes the random stream of the code that asked for it.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: data[k] for k in ("x", "y", "x_test", "y_test")}


@TASKS.register("mnist1d", modality="sequence", split="train", input_kind="signal", needs_data_dir=False)
def mnist1d(data_dir: str | None = None) -> Task:
    """MNIST-1D with the package defaults: 5000 signals of length 40, 4000 train / 1000 val."""
    return _mnist1d_task("mnist1d", num_samples=5000, seed=42)


@TASKS.register(
    "mnist1d-large", modality="sequence", split="train", input_kind="signal", needs_data_dir=False
)
def mnist1d_large(data_dir: str | None = None) -> Task:
    """MNIST-1D from 20000 signals with another seed: 16000 train / 4000 val."""
    return _mnist1d_task("mnist1d-large", num_samples=20000, seed=1)


def _mnist1d_task(name: str, num_samples: int, seed: int) -> Task:
    data = make_mnist1d(num_samples, seed)
    # (N, 40) -> (N, 1, 40): one channel of length 40. The package already scales by whole-data
    # statistics; redo it with training statistics only, like every other task.
    x_train, x_val = standardize(data["x"][:, None], data["x_test"][:, None], (0, 2))
    return Task(
        name=name,
        modality="sequence",
        split="train",
        spec=TaskSpec("signal", (1, 40), 10, "classification"),
        x_train=x_train,
        y_train=torch.as_tensor(data["y"], dtype=torch.int64),
        x_val=x_val,
        y_val=torch.as_tensor(data["y_test"], dtype=torch.int64),
        description=f"MNIST-1D (Greydanus 2020) from mnist1d.make_dataset, {num_samples} samples, "
        f"seed {seed}, the package's 80/20 split",
    )
