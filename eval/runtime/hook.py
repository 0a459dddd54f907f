"""The zoo training-loop hook of weightcast's `eval` stage: `NowcastHook` drives a
`eval.runtime.Nowcaster` inside `zoo.train.train`, so zoo runs train with a predictor bundle:

    result = train(TrainConfig(arch="mlp", task="mnist1d", epochs=20), hooks=[NowcastHook("org/wnn-bundle")])

The nowcaster is created at the start of training (its first snapshot is the initial weights)
and called after every epoch (`on_epoch_end`), or every `every_steps` optimizer steps
(`on_step_end`). NiNo's cadence, a call every step that snapshots every period / 5 steps and jumps
every period with its decreasing horizon:

    config = NowcastConfig(period=1000, snapshot_every=200, horizon_schedule="nino")
    NowcastHook(bundle, config, every_steps=1)

With the "nino" schedule and no `max_calls`, the run's length in calls is filled in from its
budget (`zoo.train.total_steps`). The guard's probe batch is `probe_size` training examples drawn
once with the run's seed (its own generator: the run's data order and augmentation are
unchanged), scored with the task's loss.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from weightcast.eval.runtime.config import NowcastConfig
from weightcast.eval.runtime.nowcaster import Nowcaster, open_bundle
from weightcast.eval.runtime.probe import probe_batch
from weightcast.eval.runtime.stats import NowcastStats
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.zoo.config import ConfigError
from weightcast.zoo.train import Hook, TrainState, steps_per_epoch, total_steps

__all__ = ["DEFAULT_PROBE_SIZE", "NowcastHook"]

# Training examples in the guard's probe batch. 128 made the same decisions as 512 on the zero-shot
# suite and the guard benchmark, at a quarter of the probe's cost (the char LM's overhead 10.7% -> 2.5%).
DEFAULT_PROBE_SIZE = 128


class NowcastHook(Hook):
    """Applies `bundle` to a zoo run with `config` (default `NowcastConfig()`); calls the
    nowcaster after each epoch, or after every `every_steps` optimizer steps when > 0. The run's
    nowcaster (and its `stats`) is `self.nowcaster` once training has started."""

    def __init__(
        self,
        bundle: PredictorBundle | str | os.PathLike,
        config: NowcastConfig | None = None,
        *,
        every_steps: int = 0,
        probe_size: int = DEFAULT_PROBE_SIZE,
        revision: str | None = None,  # of a Hub bundle: branch, tag or commit
    ):
        if every_steps < 0 or probe_size < 1:
            raise ConfigError(
                "need every_steps >= 0 (0: once per epoch) and probe_size >= 1; "
                f"got {every_steps=}, {probe_size=}"
            )
        self.bundle = open_bundle(bundle, revision)
        self.config = config or NowcastConfig()
        self.config.for_bundle(self.bundle)  # config errors now, not when training starts
        self.every_steps, self.probe_size = every_steps, probe_size
        self.nowcaster: Nowcaster | None = None

    @property
    def stats(self) -> NowcastStats:
        """The counters of the current (or last) run's nowcaster."""
        if self.nowcaster is None:
            raise RuntimeError("NowcastHook has no nowcaster yet: it is created when training starts")
        return self.nowcaster.stats

    def on_train_start(self, state: TrainState) -> None:
        probe = None
        if self.config.guard:
            task = state.task
            generator = torch.Generator().manual_seed(state.config.seed)
            rows = torch.randperm(len(task.x_train), generator=generator)[: self.probe_size]
            inputs, targets = task.x_train[rows].to(state.device), task.y_train[rows].to(state.device)
            probe = probe_batch(inputs, targets, task.loss)
        config = self.config
        if config.horizon_schedule == "nino" and config.max_calls is None:
            steps = total_steps(state.config, state.task)
            calls = steps // (self.every_steps or steps_per_epoch(state.config, state.task))
            config = dataclasses.replace(config, max_calls=max(1, calls))
        self.nowcaster = Nowcaster(state.model, state.optimizer, self.bundle, config, probe=probe)

    def on_step_end(self, state: TrainState, loss: torch.Tensor) -> None:
        if self.every_steps and state.step % self.every_steps == 0:
            self.nowcaster()

    def on_epoch_end(self, state: TrainState) -> None:
        if not self.every_steps:
            self.nowcaster()
