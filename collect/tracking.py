"""Experiment tracking of a collection (collect): `tracking.name=wandb` gives one wandb run per worker
(group = the collection's name, job_type = collect) with live curves of the run in training and a
table of per-run summaries; `none` (the default) tracks nothing. wandb is imported only when used;
`WANDB_MODE=offline` works without an account (files under `<out_dir>/wandb`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightcast.zoo.config import config_to_dict
from weightcast.zoo.train import Hook, TrainState

__all__ = ["TRACKERS", "Tracker", "WandbTracker", "make_tracker", "SUMMARY_COLUMNS"]

TRACKERS = ("none", "wandb")

SUMMARY_COLUMNS = (
    "run_id", "arch", "task", "optimizer", "lr", "batch_size", "seed", "status", "final_metric", "seconds"
)


class Tracker:
    """Tracks nothing; the interface the worker calls."""

    def hooks(self, spec: Any) -> list[Hook]:
        return []

    def run_finished(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class WandbTracker(Tracker):
    def __init__(self, config: Any, worker_name: str):
        import wandb  # optional at import time: only collections that track need it

        self._wandb = wandb
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=config.tracking.project,
            group=config.name,
            job_type="collect",
            name=worker_name,
            dir=str(out),
            config=config_to_dict(config),
            reinit="create_new",
        )
        self.rows: list[list[Any]] = []

    def hooks(self, spec: Any) -> list[Hook]:
        return [_CurveHook(self.run)]

    def run_finished(self, record: dict[str, Any]) -> None:
        self.rows.append([record[c] for c in SUMMARY_COLUMNS])
        self.run.log({"runs_done": len(self.rows), "run_seconds": record["seconds"]})

    def close(self) -> None:
        self.run.log({"runs": self._wandb.Table(columns=list(SUMMARY_COLUMNS), data=self.rows)})
        self.run.finish()


def make_tracker(config: Any, worker_name: str) -> Tracker:
    """The tracker of `config.tracking.name` for one worker."""
    return WandbTracker(config, worker_name) if config.tracking.name == "wandb" else Tracker()


class _CurveHook(Hook):
    """Logs each epoch of the run in training (x axis: the worker's wandb step)."""

    def __init__(self, run: Any):
        self.wandb_run = run

    def on_epoch_end(self, state: TrainState) -> None:
        r = state.history.records[-1]
        self.wandb_run.log(
            {
                "epoch": r.epoch,
                "train_loss": r.train_loss,
                "val_loss": r.val_loss,
                f"val_{state.history.metric_name}": r.val_metric,
                "lr": r.lr,
            }
        )
