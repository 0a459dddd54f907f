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

import numpy as np
import torch

from zoo.tasks.base import Task, TaskSpec
from zoo.tasks.registry import TASKS
from zoo.tasks.sklearn_data import heldout_split, standardize

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
        r = rng.uniform(0.17, 0.34) * size  # half-extent of the shape, in pixels
        cy, cx = rng.uniform(r, size - r, 2)
        mask = _shape_mask(int(label), yy - cy, xx - cx, r, rng)
        noise = rng.normal(0.0, rng.uniform(0.15, 0.45), (size, size))
        images[i, 0] = rng.uniform(-0.2, 0.2) + rng.uniform(0.5, 1.0) * mask + noise
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


def _shape_mask(label: int, dy: np.ndarray, dx: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of shape `label` with half-extent `r`, from the pixel offsets
    `dy`, `dx` (size, size) to the shape's centre."""
    box = np.maximum(np.abs(dx), np.abs(dy))  # Chebyshev distance: squares
    dist = np.hypot(dx, dy)  # Euclidean distance: disks
    line = 0.9  # half-thickness of strokes, in pixels
    if label == 0:
        return _inside(r - box)
    if label == 1:
        return _inside(line - np.abs(box - (r - line)))
    if label == 2:
        return _inside(r - dist)
    if label == 3:
        return _inside(line - np.abs(dist - (r - line)))
    if label == 4:
        dy = dy * rng.choice([-1.0, 1.0])  # apex up or down
        return _inside(np.minimum(r - np.abs(dy), (dy + r) / 2 - np.abs(dx)))
    if label == 5:
        return np.maximum(_inside(np.minimum(line - np.abs(dx), r - np.abs(dy))),
                          _inside(np.minimum(line - np.abs(dy), r - np.abs(dx))))  # fmt: skip
    if label == 6:
        return _inside(np.minimum(1.5 * line - np.abs(dy), r - np.abs(dx)))
    if label == 7:
        return _inside(np.minimum(1.5 * line - np.abs(dx), r - np.abs(dy)))
    if label == 8:
        across = np.abs(dx - rng.choice([-1.0, 1.0]) * dy) / np.sqrt(2.0)  # either diagonal
        return _inside(np.minimum(line - across, r - box))
    centres = rng.uniform(-r, r, (rng.integers(3, 6), 2))  # 3-5 dots of radius 1
    return np.max([_inside(1.0 - np.hypot(dy - cy, dx - cx)) for cy, cx in centres], axis=0)


def _inside(signed_distance: np.ndarray) -> np.ndarray:
    """Pixel coverage from the signed distance (pixels) to a shape's edge, positive inside."""
    return np.clip(signed_distance + 0.5, 0.0, 1.0)
