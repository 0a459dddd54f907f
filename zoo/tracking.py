"""Experiment tracking, shared by every stage (zoo is the shared core): one `TrackingConfig` that
each stage's config holds as `tracking`, and `make_tracker`, which gives a `Tracker`.

`tracking.name=none` (the default) gives a `Tracker` whose calls do nothing, so a stage calls it
without asking whether tracking is on; `wandb` gives one wandb run (wandb is imported only then;
`WANDB_MODE=offline` works without an account, the files go under the run's `out_dir/wandb`).

    tracker = make_tracker(config.tracking, job_type="eval", name=config.name, out_dir=out, config=config)
    tracker.log({"loss": 0.1})
    tracker.finish()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence, get_args

from weightcast.zoo.config import config_to_dict
from weightcast.zoo.train import Hook, TrainState

__all__ = ["TRACKERS", "TrackingConfig", "Tracker", "WandbTracker", "make_tracker"]

TrackerName = Literal["none", "wandb"]
TRACKERS: tuple[str, ...] = get_args(TrackerName)


@dataclass
class TrackingConfig:
    """`tracking` of every stage's config; OmegaConf checks `name` against `TRACKERS`."""

    name: TrackerName = "none"  # none | wandb
    project: str = "weightcast"  # the wandb project


class Tracker:
    """Tracks nothing (`tracking.name=none`); the interface every stage calls."""

    def log(self, row: Mapping[str, Any]) -> None:
        """One row of scalars (one wandb step)."""

    def define_step(self, prefix: str, step: str = "step") -> None:
        """Plot the keys `prefix/*` over their own step key `prefix/<step>`."""

    def table(self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A table of `rows` (one value per column) under `key`."""

    def image(self, key: str, path: str | Path) -> None:
        """An image file (a plot) under `key`."""

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Final values of the run (its summary)."""

    def epoch_hooks(self) -> list[Hook]:
        """Hooks for `zoo.train.train` that log every epoch of the run in training."""
        return []

    def finish(self) -> None:
        """End the run."""


class WandbTracker(Tracker):
    """One wandb run (`wandb.init` with the stage's `job_type`, the run's `name`, an optional
    `group`, the resolved config)."""

    def __init__(
        self, tracking: TrackingConfig, *, job_type: str, name: str, out_dir: str | Path, config: Any,
        group: str | None = None,
    ):
        import wandb  # optional at import time: only tracked runs need it

        self._wandb = wandb
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=tracking.project, job_type=job_type, group=group, name=name, dir=str(out),
            config=config_to_dict(config), reinit="create_new",
        )

    def log(self, row: Mapping[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if v is not None})

    def define_step(self, prefix: str, step: str = "step") -> None:
        self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/{step}")

    def table(self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.run.log({key: self._wandb.Table(columns=list(columns), data=[list(row) for row in rows])})

    def image(self, key: str, path: str | Path) -> None:
        self.run.log({key: self._wandb.Image(str(path))})

    def summarize(self, values: Mapping[str, Any]) -> None:
        self.run.summary.update(dict(values))

    def epoch_hooks(self) -> list[Hook]:
        return [_EpochCurves(self)]

    def finish(self) -> None:
        self.run.finish()


def make_tracker(
    tracking: TrackingConfig, *, job_type: str, name: str, out_dir: str | Path, config: Any,
    group: str | None = None,
) -> Tracker:
    """The tracker `tracking.name` names: a `WandbTracker` for `wandb`, else a `Tracker` that does
    nothing. `job_type` is the stage (collect, train-predictor, eval), `config` its resolved config."""
    if tracking.name == "wandb":
        return WandbTracker(
            tracking, job_type=job_type, name=name, out_dir=out_dir, config=config, group=group
        )
    return Tracker()


class _EpochCurves(Hook):
    """Logs each epoch of the run in training (x axis: the tracker's step)."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def on_epoch_end(self, state: TrainState) -> None:
        r = state.history.records[-1]
        self.tracker.log(
            {
                "epoch": r.epoch,
                "train_loss": r.train_loss,
                "val_loss": r.val_loss,
                f"val_{state.history.metric_name}": r.val_metric,
                "lr": r.lr,
            }
        )
