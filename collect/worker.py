"""One collection worker (collect): trains runs with the zoo's loop and a `Recorder`, writes each
parameter's history as one sample into the layer type's shard, and commits groups of runs. Every
engine (local processes, Ray actors) drives the same `Worker`, so they produce the same runs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from weightcast.zoo.tasks import TASKS
from weightcast.zoo.train import History, TrainConfig, train

from weightcast.collect.config import CollectConfig, RunSpec, parse_size, train_config
from weightcast.collect.folder import CollectionFolder
from weightcast.collect.recorder import ParamInfo, Recorder
from weightcast.collect.schema import DTYPES, RUN_STATUSES, ParamHistory, encode_sample
from weightcast.collect.tracking import WorkerTracker
from weightcast.collect.writer import GroupWriter

__all__ = ["Worker", "run_record"]

COMPLETE, DIVERGED = RUN_STATUSES


class Worker:
    """Runs run specs one after another into its own group writer (session ID `session`)."""

    def __init__(self, root: str | Path, config: CollectConfig, session: str, device: str | None = None):
        self.root = Path(root)
        self.config = config
        self.session = session
        self.device = device or config.device
        self.spool_dir = CollectionFolder(root, config.record.spool_dir).spool_dir
        self.writer = GroupWriter(
            self.root, session, parse_size(config.record.shard_size), config.record.commit_every_s
        )
        self.tracker = WorkerTracker(config, session)

    def run(self, spec: RunSpec) -> dict[str, Any]:
        """Train and record one run; returns its summary (run_id, status, final metric, seconds, ...).

        The run is complete once a later `commit` (automatic when the group is due) lists it."""
        recorder = self.recorder(spec)
        try:
            start = time.perf_counter()
            result = train(self.train_config(spec), hooks=[recorder, *self.tracker.hooks(spec)])
            return self.finish(spec, result.history, recorder, time.perf_counter() - start)
        finally:
            recorder.remove()

    def train_config(self, spec: RunSpec) -> TrainConfig:
        """The zoo config that trains `spec` on this worker's device."""
        return train_config(spec, self.device)

    def recorder(self, spec: RunSpec) -> Recorder:
        """A recorder spooling `spec`'s snapshots to this worker's spool folder."""
        record = self.config.record
        return Recorder(self.spool_dir / f"{self.session}-{spec.run_id}.raw", DTYPES[record.dtype], record.every_steps)

    def finish(
        self, spec: RunSpec, history: History, recorder: Recorder, seconds: float, **labels: Any
    ) -> dict[str, Any]:
        """After `spec` trained: write its samples from the spool, then its run record (with
        `labels`), and commit when the group is due; returns the run's summary."""
        try:  # a failure from here on leaves this run's samples half-written: drop the whole group
            for info in recorder.params:
                self._write(spec.run_id, recorder, info)
        except BaseException:
            self.writer.abandon()
            raise
        record = run_record(spec, history, recorder, seconds, self.device, self.config.record.dtype)
        record.update(labels)
        self.writer.add_run(record)
        self.tracker.run_finished(record)
        if self.writer.due():
            self.writer.commit()
        return _summary(record)

    def close(self) -> None:
        """Commit what is pending and end tracking."""
        try:
            self.writer.commit()
        finally:
            self.tracker.close()

    def abandon(self) -> None:
        """Drop what is pending (after an error while writing) and end tracking."""
        try:
            self.writer.abandon()
        finally:
            self.tracker.close()

    def _write(self, run_id: str, recorder: Recorder, info: ParamInfo) -> None:
        """One parameter's history, read from the spool, encoded and appended to its shard. At most
        the (T, *shape) tensor and its encoded bytes are alive at once, and both die on return."""
        sample = encode_sample(
            ParamHistory(
                run_id, info.name, info.index, info.layer_type,
                recorder.read(info.index), list(recorder.epochs), list(recorder.steps),
            )
        )
        self.writer.write(info.layer_type, sample)


def run_record(
    spec: RunSpec, history: History, recorder: Recorder, seconds: float, device: str, dtype: str
) -> dict[str, Any]:
    """The run's entry in a commit record: config, labels, status, metrics, and its parameters."""
    train = spec.train
    counts: dict[str, int] = {}
    for info in recorder.params:
        counts[info.layer_type] = counts.get(info.layer_type, 0) + info.numel
    finite = [r.val_metric for r in history.records if math.isfinite(r.val_metric)]
    return {
        "run_id": spec.run_id,
        "population_group": spec.group,
        "arch": train["arch"],
        "arch_kwargs": train["arch_kwargs"],
        "task": train["task"],
        "split": TASKS.metadata(train["task"])["split"],
        "optimizer": train["optimizer"]["name"],
        "lr": train["optimizer"]["lr"],
        "schedule": train["schedule"]["name"],
        "batch_size": train["batch_size"],
        "augmentation": train["augmentation"],
        "init": train["init"],
        "epochs": train["epochs"],
        "seed": train["seed"],
        "status": DIVERGED if history.diverged else COMPLETE,
        "metric_name": history.metric_name,
        "final_metric": finite[-1] if finite else None,
        "best_metric": max(finite) if finite else None,
        "seconds": round(seconds, 3),
        "device": device,
        "threads": torch.get_num_threads(),  # torch CPU threads: part of what made the run's bits
        "dtype": dtype,
        "snapshots": len(recorder.epochs),
        "num_params": sum(counts.values()),
        "layer_type_counts": counts,
        "params": [
            {"name": p.name, "index": p.index, "layer_type": p.layer_type, "shape": list(p.shape)}
            for p in recorder.params
        ],
        "metrics": [{k: _finite_or_none(v) for k, v in row.items()} for row in history.to_dicts()],
        "config": train,
    }


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "run_id", "arch", "task", "optimizer", "lr", "status", "metric_name", "final_metric", "seconds",
        "snapshots",
    )  # fmt: skip
    return {k: record[k] for k in keys}


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/Inf: a non-finite metric (of a diverged epoch) is stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
