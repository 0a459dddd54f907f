"""Test helper: what offline wandb runs logged. An offline run's `.wandb` file is a LevelDB-style log
(32 KiB blocks of records: crc32, length, type FULL/FIRST/MIDDLE/LAST) of protobuf `Record`s, the
file `wandb sync` uploads; wandb (whose reader is in its Go core) ships the protobuf classes."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> Iterator[Any]:
    """The protobuf Records of one .wandb file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    pos, pending = 7, b""  # file header: ":W&B", version (2 bytes), magic (1 byte)
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if pos + HEADER + length > len(data):  # a record still being written
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


@dataclass
class OfflineRun:
    """What one offline run logged: its name, group, job type, config, history rows (dicts of
    JSON values), summary, logged artifacts (name, type, digest, used)."""

    folder: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def _complete_records(path: Path, timeout: float = 60.0) -> list[Any]:
    """The records of a finished run's file. wandb's service may still be writing the file when
    `run.finish()` returns (a loaded machine shows it), so read again until its `exit` record is
    there (at most `timeout` seconds; then what is there)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(read_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline run under `root` (any depth), ordered by folder name (start time)."""
    runs = []
    for path in sorted(Path(root).rglob("offline-run-*/run-*.wandb"), key=lambda p: p.parent.name):
        run = OfflineRun(path.parent)
        for record in _complete_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                r = record.run
                run.name, run.group, run.job_type = r.display_name, r.run_group, r.job_type
                run.config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
            elif kind == "config":
                run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
            elif kind == "history":
                row = {_key(i): json.loads(i.value_json) for i in record.history.item}
                run.history.append({k: v for k, v in row.items() if not k.startswith("_")})  # not _step
            elif kind == "summary":
                run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
            elif kind == "artifact":
                a = record.artifact
                run.artifacts.append(
                    {"name": a.name, "type": a.type, "digest": a.digest, "used": a.use_after_commit,
                     "metadata": json.loads(a.metadata or "{}")}
                )
        runs.append(run)
    return runs
