"""Shard writing with group commits (collect): a worker keeps one open webdataset tar per layer type;
after a run, once a tar has reached the shard size (or the group has been open `commit_every_s`),
all of them are closed, renamed from `.tar.tmp` to `.tar`, and a commit record naming the group's
runs and shards is written atomically. A run is complete iff a commit record lists it, so a crash
at any moment leaves only temporary files and unreferenced shards, which the next start deletes.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import webdataset as wds

from weightcast.zoo.rundir import write_json_atomic

from weightcast.collect.errors import disk_full_is_fatal
from weightcast.collect.schema import COMMITS_DIR, SCHEMA_VERSION, shard_name

__all__ = ["GroupWriter", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


class GroupWriter:
    """The open group of one worker session. `group_id = <session>-<k>` for its k-th group."""

    def __init__(self, root: str | Path, session: str, shard_size: int, commit_every_s: float = 600.0):
        self.root = Path(root)
        self.session = session
        self.shard_size = shard_size
        self.commit_every_s = commit_every_s
        self.group_index = 0
        self._runs: list[dict[str, Any]] = []
        # layer type -> (tar writer, its open .tar.tmp file, samples written)
        self._tars: dict[str, tuple[wds.TarWriter, BinaryIO, int]] = {}
        self._opened_at = 0.0

    @property
    def group_id(self) -> str:
        return f"{self.session}-{self.group_index:04d}"

    def write(self, layer_type: str, sample: dict[str, Any]) -> None:
        """Append one sample to this group's shard of `layer_type`."""
        if not self._tars and not self._runs:
            self._opened_at = time.monotonic()
        if layer_type not in self._tars:
            path = self._final_path(layer_type)
            path.parent.mkdir(parents=True, exist_ok=True)
            with disk_full_is_fatal(path):
                stream = open(f"{path}{TMP_SUFFIX}", "wb")
                self._tars[layer_type] = (wds.TarWriter(stream), stream, 0)
        tar, stream, count = self._tars[layer_type]
        with disk_full_is_fatal(stream.name):
            tar.write(sample)
        self._tars[layer_type] = (tar, stream, count + 1)

    def add_run(self, record: dict[str, Any]) -> None:
        """Mark a run whose samples are all written; it becomes complete at the next commit."""
        if not self._tars and not self._runs:
            self._opened_at = time.monotonic()
        self._runs.append(record)

    def due(self) -> bool:
        """Whether the group should be committed now (a shard is full, or the group is old)."""
        if not self._runs:
            return False
        full = any(stream.tell() >= self.shard_size for _, stream, _ in self._tars.values())
        return full or time.monotonic() - self._opened_at >= self.commit_every_s

    def commit(self) -> Path | None:
        """Close, rename and record the group's shards and runs; None if the group is empty."""
        if not self._runs:
            self.abandon()
            return None
        shards = []
        for layer_type, (tar, stream, count) in sorted(self._tars.items()):
            final = self._final_path(layer_type)
            with disk_full_is_fatal(final):
                tar.close()  # writes the tar's end-of-archive blocks
                stream.flush()
                os.fsync(stream.fileno())
                size = stream.tell()
                stream.close()
                os.replace(f"{final}{TMP_SUFFIX}", final)
            rel = final.relative_to(self.root).as_posix()
            shards.append({"path": rel, "layer_type": layer_type, "samples": count, "bytes": size})
        record = {
            "schema_version": SCHEMA_VERSION,
            "group_id": self.group_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runs": [{**run, "group_id": self.group_id} for run in self._runs],
            "shards": shards,
        }
        path = self.root / COMMITS_DIR / f"{self.group_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with disk_full_is_fatal(path):
            write_json_atomic(path, record)
        self._tars.clear()
        self._runs.clear()
        self.group_index += 1
        return path

    def abandon(self) -> None:
        """Drop the open group: its runs stay incomplete, its temporary shards are deleted."""
        for layer_type, (tar, stream, _) in self._tars.items():
            # The file first: the tar writer's own close would write more to a possibly full disk;
            # closing it afterwards fails harmlessly and keeps it from writing at garbage collection.
            with contextlib.suppress(OSError):
                stream.close()
            with contextlib.suppress(OSError, ValueError):
                tar.close()
            Path(f"{self._final_path(layer_type)}{TMP_SUFFIX}").unlink(missing_ok=True)
        self._tars.clear()
        self._runs.clear()

    def _final_path(self, layer_type: str) -> Path:
        return self.root / shard_name(layer_type, self.group_id)
