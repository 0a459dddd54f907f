"""Built-in time-series forecasting task (`mackey-glass`): the Mackey-Glass delay differential
equation, the classic chaotic benchmark of sequence predictors, generated offline. Part of **zoo**;
`heldout`, so `eval` has a regression task of the sequence modality absent from the collection
(which has MNIST-1D, a classification of signals).

    dx/dt = beta x(t - tau) / (1 + x(t - tau)^n) - gamma x(t),  beta 0.2, gamma 0.1, n 10, tau 17

integrated by Euler steps of 0.1 from x = 1.2 (history constant), sampled once per time unit
after a burn-in, with Gaussian observation noise. An example: the last `WINDOW` noisy samples
(1, 32) -> the clean value `HORIZON` samples after the window's end (1,). Windows of the first 80%
of the series train, those of the last 20% (after a gap of one window) validate; inputs and
targets are standardized with training statistics.
"""

from __future__ import annotations

import numpy as np

from weightcast.zoo.tasks.base import Task, TaskSpec, standardize
from weightcast.zoo.tasks.registry import TASKS

__all__ = ["WINDOW", "HORIZON", "make_mackey_glass", "mackey_glass"]

WINDOW = 32  # past samples per example
HORIZON = 8  # samples ahead of the window's end that are predicted
NUM_SAMPLES = 5_000  # series length after burn-in (time units)
NOISE = 0.02  # observation noise std, about 9% of the series' std
_DT, _TAU, _BURN_IN = 0.1, 17.0, 500


def make_mackey_glass(num_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) float64 series of `num_samples` values, one per time unit; the noise of
    `seed` (the clean series is deterministic)."""
    per_unit = round(1 / _DT)
    delay = round(_TAU / _DT)
    steps = (num_samples + _BURN_IN) * per_unit
    x = np.empty(steps + delay)
    x[: delay + 1] = 1.2
    for t in range(delay, steps + delay - 1):
        lagged = x[t - delay]
        x[t + 1] = x[t] + _DT * (0.2 * lagged / (1.0 + lagged**10) - 0.1 * x[t])
    clean = x[delay + _BURN_IN * per_unit :: per_unit][:num_samples]
    noisy = clean + np.random.default_rng(seed).normal(0.0, NOISE, clean.shape)
    return clean, noisy


@TASKS.register(
    "mackey-glass", modality="sequence", split="heldout", input_kind="signal", needs_data_dir=False
)
def mackey_glass(data_dir: str | None = None) -> Task:
    """Forecast Mackey-Glass 8 steps ahead from 32 noisy past samples: ~3900 train / ~950 val windows."""
    clean, noisy = make_mackey_glass(NUM_SAMPLES)
    starts = np.arange(NUM_SAMPLES - WINDOW - HORIZON + 1)
    x = np.stack([noisy[s : s + WINDOW] for s in starts])[:, None]  # (N, 1, 32)
    y = clean[starts + WINDOW + HORIZON - 1][:, None]  # (N, 1)
    n_train = int(0.8 * len(starts))
    val = slice(n_train + WINDOW + HORIZON, None)  # no window of val overlaps a training target
    x_train, x_val = standardize(x[:n_train], x[val], (0, 1, 2))
    y_train, y_val = standardize(y[:n_train], y[val], (0, 1))
    return Task(
        name="mackey-glass",
        modality="sequence",
        split="heldout",
        spec=TaskSpec("signal", (1, WINDOW), 1, "regression"),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        description=f"Mackey-Glass (tau 17) series of {NUM_SAMPLES} samples with noise std {NOISE}: "
        f"{WINDOW} past samples -> the value {HORIZON} ahead; first 80% train, last 20% val",
    )
