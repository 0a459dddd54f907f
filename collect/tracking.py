"""Experiment tracking of a collection (collect), on the zoo's one tracker (`zoo.tracking`), with
`tracking.name=wandb` (`none`, the default, tracks nothing; `WANDB_MODE=offline` works without an
account, files under `<out_dir>/wandb`). Every wandb run of a collection joins `tracking.group`
(default: the collection's name), job_type collect:
- one run per worker (`WorkerTracker`): each training run's curves under its own keys
  `run/<run_id>/{epoch,train_loss,val_loss,val_<metric>,lr}`, plotted over `run/<run_id>/epoch`, so
  every run is a curve of its own; and a table `runs` of per-run summaries with each run's config;
- one run per collection session (`CollectionTracker`, named `<name>` or `<name>-part<i>of<N>`): the
  progress (runs done), and, once the collection is complete, its index as the Artifact
  `collection-<name>` (type collection) that train-predictor uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from weightcast.zoo.tracking import artifact_name, make_tracker
from weightcast.zoo.train import Hook

__all__ = ["WorkerTracker", "CollectionTracker", "SUMMARY_COLUMNS", "collection_artifact"]

SUMMARY_COLUMNS = (
    "run_id", "arch", "task", "optimizer", "lr", "batch_size", "seed", "status", "final_metric", "seconds"
)


def collection_artifact(name: str) -> str:
    """The wandb artifact name of collection `name`'s index."""
    return artifact_name(f"collection-{name}")


class WorkerTracker:
    """The tracking of one worker: curves of each run it trains, a row per finished run."""

    def __init__(self, config: Any, worker_name: str):
        self.tracker = make_tracker(
            config.tracking, job_type="collect", name=f"{config.name}-{worker_name}", group=config.name,
            out_dir=config.out_dir, config=config,
        )
        self.rows: list[list[Any]] = []

    def hooks(self, spec: Any) -> list[Hook]:
        """The hooks that log run `spec`'s epochs under its own keys `run/<run_id>/*`."""
        return self.tracker.epoch_hooks(prefix=f"run/{spec.run_id}")

    def run_finished(self, record: dict[str, Any]) -> None:
        config = json.dumps(record["config"], sort_keys=True)
        self.rows.append([*(record[c] for c in SUMMARY_COLUMNS), config])
        self.tracker.log({"runs_done": len(self.rows), "run_seconds": record["seconds"]})

    def close(self) -> None:
        self.tracker.table("runs", (*SUMMARY_COLUMNS, "config"), self.rows)
        self.tracker.finish()


class CollectionTracker:
    """The tracking of one collection session (made at its start, so a missing wandb login stops
    collect before any run): progress, and the index as an Artifact once complete."""

    def __init__(self, config: Any, prefix: str):
        name = config.name if prefix == "all" else f"{config.name}-{prefix}"
        self.name = config.name
        self.tracker = make_tracker(
            config.tracking, job_type="collect", name=name, group=config.name, out_dir=config.out_dir,
            config=config,
        )

    def close(self, index_path: Path, index: dict[str, Any] | None, finished: int) -> None:
        """Log the runs finished now and, when the collection is complete (`index`), its index."""
        self.tracker.summarize({"runs_finished_now": finished})
        if index is not None:
            self.tracker.summarize({f"index/{k}": v for k, v in index.get("totals", {}).items()})
            self.tracker.log_artifact(
                collection_artifact(self.name), "collection", index_path,
                metadata={"name": self.name, "root": str(Path(index_path).parent), **index.get("totals", {})},
            )
        self.tracker.finish()
