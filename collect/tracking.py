"""Experiment tracking of a collection (collect), on the zoo's one tracker (`zoo.tracking`):
`tracking.name=wandb` gives one wandb run per worker (group = the collection's name, job_type =
collect) with live curves of the run in training and a table of per-run summaries; `none` (the
default) tracks nothing. `WANDB_MODE=offline` works without an account (files under `<out_dir>/wandb`).
"""

from __future__ import annotations

from typing import Any

from weightcast.zoo.tracking import make_tracker
from weightcast.zoo.train import Hook

__all__ = ["WorkerTracker", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = (
    "run_id", "arch", "task", "optimizer", "lr", "batch_size", "seed", "status", "final_metric", "seconds"
)


class WorkerTracker:
    """The tracking of one worker: curves of each run it trains, a row per finished run."""

    def __init__(self, config: Any, worker_name: str):
        self.tracker = make_tracker(
            config.tracking, job_type="collect", name=worker_name, group=config.name, out_dir=config.out_dir,
            config=config,
        )
        self.rows: list[list[Any]] = []

    def hooks(self, spec: Any) -> list[Hook]:
        return self.tracker.epoch_hooks()

    def run_finished(self, record: dict[str, Any]) -> None:
        self.rows.append([record[c] for c in SUMMARY_COLUMNS])
        self.tracker.log({"runs_done": len(self.rows), "run_seconds": record["seconds"]})

    def close(self) -> None:
        self.tracker.table("runs", SUMMARY_COLUMNS, self.rows)
        self.tracker.finish()
