"""Built-in generated tasks: the LFD-2 paper's synthetic regressions (`syn1`, `syn2`) and a
procedural image classification task (`shapes`) that gives 2-D convnets a training-split task
without any download. Part of **zoo**.

Syn-1 / Syn-2 follow section 5.1 of papers/lfd2-less-is-more-weight-farcasting.txt and the
authors' generator (utils/data_generator.py in their repository): 100 samples X ~ N(0, I),
w* ~ N(0, I), y = X w*; Syn-1 is that least-squares problem in 3 dimensions (their
`Least_Squares_3d` sets, which their LFD-2 script reads), Syn-2 is the same linear teacher in 1
dimension, fitted by a 1 -> 10 -> 1 ReLU MLP (31 parameters). `make_syn1` / `make_syn2` give one
problem instance per seed for the trajectory benchmark (200 problems each).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from weightcast.zoo.tasks.base import Task, TaskSpec, heldout_split, standardize
from weightcast.zoo.tasks.registry import TASKS

__all__ = [
    "SYN1_DIM",
    "SYN_SAMPLES",
    "SHAPE_CLASSES",
    "make_syn1",
    "make_syn2",
    "make_shapes",
    "syn1",
    "syn2",
    "shapes",
]

SYN1_DIM = 3
SYN_SAMPLES = 100
SHAPE_CLASSES = (
    "square", "square-outline", "disk", "ring", "triangle",
    "plus", "horizontal-bar", "vertical-bar", "diagonal", "dots",
)  # fmt: skip


def make_syn1(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One Syn-1 problem: X (100, 3) ~ N(0, I), y = X w* (100,) with w* ~ N(0, I), float64."""
    return _linear_teacher(seed, SYN1_DIM)


def make_syn2(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One Syn-2 problem: X (100, 1) ~ N(0, 1), y = X w* (100,) with a scalar w* ~ N(0, 1), float64;
    the data the 1 -> 10 -> 1 ReLU MLP is fitted to."""
    return _linear_teacher(seed, 1)


@TASKS.register("syn1", modality="synthetic", split="train", input_kind="tabular", needs_data_dir=False)
def syn1(data_dir: str | None = None) -> Task:
    """Syn-1 problem of seed 0 as a regression task: 80 train / 20 val samples of (3,) inputs."""
    return _syn_task("syn1", *make_syn1(0))


@TASKS.register("syn2", modality="synthetic", split="train", input_kind="tabular", needs_data_dir=False)
def syn2(data_dir: str | None = None) -> Task:
    """Syn-2 problem of seed 0 as a regression task: 80 train / 20 val samples of (1,) inputs."""
    return _syn_task("syn2", *make_syn2(0))


def make_shapes(num_samples: int, seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """`num_samples` grayscale images (N, 1, size, size) float32 of the 10 `SHAPE_CLASSES` (labels
    (N,) int64, balanced), each at a random position and size, with random intensity, background
    level and Gaussian pixel noise."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % len(SHAPE_CLASSES))
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres, (size, size) each
    images = np.empty((num_samples, 1, size, size), dtype=np.float32)
    for i, label in enumerate(labels):
        r = rng.uniform(0.2, 0.4) * size  # half-extent of the shape, in pixels
        cy, cx = rng.uniform(r, size - r, 2)
        mask = _SHAPES[SHAPE_CLASSES[label]](yy - cy, xx - cx, r, rng)
        noise = rng.normal(0.0, rng.uniform(0.05, 0.3), (size, size))
        images[i, 0] = rng.uniform(-0.2, 0.2) + rng.uniform(0.6, 1.0) * mask + noise
    return images, labels.astype(np.int64)


@TASKS.register("shapes", modality="vision", split="train", input_kind="image", needs_data_dir=False)
def shapes(data_dir: str | None = None) -> Task:
    """10-class 16x16 shape images: 6000 train / 1500 val, generated from seed 0."""
    n_train, n_val = 6000, 1500
    images, labels = make_shapes(n_train + n_val, seed=0)
    x_train, x_val = standardize(images[:n_train], images[n_train:], (0, 2, 3))
    y = torch.as_tensor(labels)
    return Task(
        name="shapes",
        modality="vision",
        split="train",
        spec=TaskSpec("image", (1, 16, 16), len(SHAPE_CLASSES), "classification"),
        x_train=x_train,
        y_train=y[:n_train],
        x_val=x_val,
        y_val=y[n_train:],
        description="procedural 16x16 shapes (" + ", ".join(SHAPE_CLASSES) + "), random position, "
        "size, intensity and noise; seed 0, standardized with training statistics",
    )


def _linear_teacher(seed: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(dim)
    x = rng.standard_normal((SYN_SAMPLES, dim))
    return x, x @ w_star


def _syn_task(name: str, x: np.ndarray, y: np.ndarray) -> Task:
    # Inputs are standard normal by construction; they are not re-standardized, so the task is
    # exactly the paper's problem (the same w* fits it).
    train, val = heldout_split(len(y), 0.2, seed=0)
    x_t = torch.as_tensor(x, dtype=torch.float32)
    y_t = torch.as_tensor(y, dtype=torch.float32)[:, None]  # (N, 1) regression targets
    return Task(
        name=name,
        modality="synthetic",
        split="train",
        spec=TaskSpec("tabular", (x.shape[1],), 1, "regression"),
        x_train=x_t[train],
        y_train=y_t[train],
        x_val=x_t[val],
        y_val=y_t[val],
        description=f"LFD-2 {name}: y = X w*, X ~ N(0, I) of dimension {x.shape[1]}, "
        f"{SYN_SAMPLES} samples (seed 0), 80/20 split",
    )


# Each shape: pixel offsets dy, dx (size, size) to its centre, half-extent r (pixels), rng ->
# anti-aliased coverage in [0, 1]. Strokes are 2 * _LINE pixels thick.
_LINE = 0.9
_ShapeFn = Callable[[np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]
_SHAPES: dict[str, _ShapeFn] = {
    "square": lambda dy, dx, r, rng: _inside(r - _box(dy, dx)),
    "square-outline": lambda dy, dx, r, rng: _inside(_LINE - np.abs(_box(dy, dx) - (r - _LINE))),
    "disk": lambda dy, dx, r, rng: _inside(r - np.hypot(dx, dy)),
    "ring": lambda dy, dx, r, rng: _inside(_LINE - np.abs(np.hypot(dx, dy) - (r - _LINE))),
    "triangle": lambda dy, dx, r, rng: _triangle(dy * rng.choice([-1.0, 1.0]), dx, r),  # apex up or down
    "plus": lambda dy, dx, r, rng: np.maximum(_bar(dy, dx, r, _LINE), _bar(dx, dy, r, _LINE)),
    "horizontal-bar": lambda dy, dx, r, rng: _bar(dy, dx, r, 1.5 * _LINE),
    "vertical-bar": lambda dy, dx, r, rng: _bar(dx, dy, r, 1.5 * _LINE),
    "diagonal": lambda dy, dx, r, rng: _diagonal(dy * rng.choice([-1.0, 1.0]), dx, r),  # either one
    "dots": lambda dy, dx, r, rng: _dots(dy, dx, rng.uniform(-r, r, (rng.integers(3, 6), 2))),
}
assert tuple(_SHAPES) == SHAPE_CLASSES


def _box(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(dx), np.abs(dy))  # Chebyshev distance: its level sets are squares


def _triangle(dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    return _inside(np.minimum(r - np.abs(dy), (dy + r) / 2 - np.abs(dx)))  # apex at dy = -r


def _bar(across: np.ndarray, along: np.ndarray, r: float, half_width: float) -> np.ndarray:
    return _inside(np.minimum(half_width - np.abs(across), r - np.abs(along)))


def _diagonal(dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    across = np.abs(dx - dy) / np.sqrt(2.0)
    return _inside(np.minimum(_LINE - across, r - _box(dy, dx)))


def _dots(dy: np.ndarray, dx: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Dots of radius 1 at `centres` (k, 2)."""
    return np.max([_inside(1.0 - np.hypot(dy - cy, dx - cx)) for cy, cx in centres], axis=0)


def _inside(signed_distance: np.ndarray) -> np.ndarray:
    """Pixel coverage from the signed distance (pixels) to a shape's edge, positive inside."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)
