"""What a task is: data tensors + loss + metric + its split (`train` tasks feed the collection,
`heldout` tasks are only ever used zero-shot by `eval`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TaskSpec", "Task", "INPUT_KINDS", "MODALITIES", "SPLITS", "Split", "task_loss", "task_metric", "heldout_split", "standardize"]

# How inputs look to an architecture (per example, without the batch dimension):
#   image   (C, H, W) float      signal  (C, L) float (channels x time)
#   tabular (F,) float           tokens  (L,) int64 token ids
INPUT_KINDS = ("image", "signal", "tabular", "tokens")
MODALITIES = ("vision", "sequence", "tabular", "text", "synthetic")
Split = Literal["train", "heldout"]  # the type of config fields that name a split
SPLITS: tuple[str, ...] = get_args(Split)

# Objectives:
#   classification   targets (N,) int64 class ids, logits (N, num_outputs); metric: accuracy
#   regression       targets (N, num_outputs) float; metric: R^2 (1 - SSE/SST), higher is better
#   language_model   targets (N, L) int64 next-token ids, logits (N, L, num_outputs); metric: accuracy
Objective = Literal["classification", "regression", "language_model"]


@dataclass(frozen=True)
class TaskSpec:
    """All an architecture factory needs to know to adapt to a task."""

    input_kind: str
    input_shape: tuple[int, ...]
    num_outputs: int  # classes, regression targets, or vocabulary size
    objective: Objective


@dataclass(frozen=True, eq=False)
class Task:
    name: str
    modality: str
    split: str
    spec: TaskSpec
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    description: str = ""

    def __post_init__(self) -> None:
        # Invariants of the task definitions themselves, not user input.
        assert self.modality in MODALITIES, self.modality
        assert self.split in SPLITS, self.split
        assert self.spec.input_kind in INPUT_KINDS, self.spec.input_kind
        assert tuple(self.x_train.shape[1:]) == self.spec.input_shape, (self.x_train.shape, self.spec)
        assert len(self.x_train) == len(self.y_train) and len(self.x_val) == len(self.y_val)

    @property
    def metric_name(self) -> str:
        return "r2" if self.spec.objective == "regression" else "accuracy"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return task_loss(self.spec.objective, output, target)

    def metric(self, output: torch.Tensor, target: torch.Tensor) -> float:
        return task_metric(self.spec.objective, output, target)


def task_loss(objective: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss of a batch: cross-entropy for classification and language modelling, MSE for regression."""
    if objective == "regression":
        return F.mse_loss(output, target)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def task_metric(objective: str, output: torch.Tensor, target: torch.Tensor) -> float:
    """Higher is better for every objective: accuracy, or R^2 for regression."""
    if objective == "regression":
        sse = (output - target).pow(2).sum()
        sst = (target - target.mean(0)).pow(2).sum().clamp_min(1e-12)
        return float(1.0 - sse / sst)
    return float((output.argmax(-1) == target).float().mean())


def heldout_split(
    num_samples: int, val_fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train indices, val indices) with `round(val_fraction * n)` samples held out, drawn
    per class when `labels` are given (so small data sets keep every class in both parts)."""
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(num_samples)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    held = np.zeros(num_samples, dtype=bool)
    for group in groups:
        held[rng.permutation(group)[: round(val_fraction * len(group))]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def standardize(
    x_train: torch.Tensor | np.ndarray, x_val: torch.Tensor | np.ndarray, dims: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 copies of both parts minus the training part's mean, divided by its std, both taken
    over `dims`: `(0,)` per feature of (N, F) data, `(0, 2, 3)` per channel of (N, C, H, W) images."""
    # Fresh float32 copies, so the in-place ops below never touch the caller's arrays (CIFAR: 600 MB).
    x_train = torch.as_tensor(x_train).to(torch.float32, copy=True)
    x_val = torch.as_tensor(x_val).to(torch.float32, copy=True)
    var, mean = torch.var_mean(x_train, dim=tuple(dims), keepdim=True, correction=0)
    std = var.sqrt().clamp_min(1e-8)  # a constant feature stays constant instead of dividing by 0
    return x_train.sub_(mean).div_(std), x_val.sub_(mean).div_(std)
