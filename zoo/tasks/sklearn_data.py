"""Built-in tasks from scikit-learn's bundled data sets (`digits`, `wine`, `breast-cancer`): small,
offline, and all `heldout`, so `eval` can use them zero-shot. Part of **zoo** (collect <- ... <- eval).

Also home of the two array helpers every built-in task shares: `heldout_split` (a seeded,
optionally stratified train/val split) and `standardize` (training-part statistics applied to both
parts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from weightcast.zoo.tasks.base import Task, TaskSpec, heldout_split, standardize
from weightcast.zoo.tasks.registry import TASKS

__all__ = ["digits", "wine", "breast_cancer"]

VAL_FRACTION = 0.2
SPLIT_SEED = 0


@TASKS.register("digits", modality="vision", split="heldout", input_kind="image", needs_data_dir=False)
def digits(data_dir: str | None = None) -> Task:
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes) as (1, 8, 8) images."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images[:, None]  # (1797, 1, 8, 8), pixel values 0..16
    return _sklearn_task(
        "digits", "vision", images, bunch.target, (0, 2, 3), "scikit-learn 8x8 handwritten digits"
    )


@TASKS.register("wine", modality="tabular", split="heldout", input_kind="tabular", needs_data_dir=False)
def wine(data_dir: str | None = None) -> Task:
    """scikit-learn's wine recognition data: 178 samples, 13 chemical features, 3 cultivars."""
    from sklearn.datasets import load_wine

    bunch = load_wine()
    return _sklearn_task("wine", "tabular", bunch.data, bunch.target, (0,), "scikit-learn wine recognition")


@TASKS.register(
    "breast-cancer", modality="tabular", split="heldout", input_kind="tabular", needs_data_dir=False
)
def breast_cancer(data_dir: str | None = None) -> Task:
    """scikit-learn's Wisconsin breast cancer data: 569 samples, 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return _sklearn_task(
        "breast-cancer", "tabular", bunch.data, bunch.target, (0,), "scikit-learn breast cancer Wisconsin"
    )


def _sklearn_task(
    name: str, modality: str, x: np.ndarray, y: np.ndarray, dims: tuple[int, ...], source: str
) -> Task:
    """Stratified 80/20 split, standardized over `dims` with training statistics."""
    train, val = heldout_split(len(y), VAL_FRACTION, SPLIT_SEED, labels=y)
    x_train, x_val = standardize(x[train], x[val], dims)
    labels = torch.as_tensor(y, dtype=torch.int64)
    input_kind = "image" if x.ndim == 4 else "tabular"
    spec = TaskSpec(input_kind, tuple(x.shape[1:]), int(y.max()) + 1, "classification")
    return Task(
        name=name,
        modality=modality,
        split="heldout",
        spec=spec,
        x_train=x_train,
        y_train=labels[train],
        x_val=x_val,
        y_val=labels[val],
        description=f"{source}; stratified {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} split "
        f"(seed {SPLIT_SEED}), standardized with training statistics",
    )
