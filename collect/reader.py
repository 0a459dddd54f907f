"""Reading a collection (collect -> train_predictor, eval): per-run metadata and per-parameter
histories as tensors, filtered by layer type, task, architecture, split or status. Built on
webdataset's tar stages; no pickle anywhere (JSON metadata, safetensors tensors).

    collection = Collection("runs/collect/debug")
    for h in collection.histories(layer_type="conv", split="train"):
        h.values            # (T, *shape): the parameter before training and after every epoch
    # a predictor-training pipeline reads one layer type's shards directly:
    wds.WebDataset(collection.shard_urls("conv"), shardshuffle=False,
                   nodesplitter=wds.split_by_node).map(decode_sample)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import webdataset as wds

from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.models import ARCHITECTURES
from weightcast.zoo.tasks import TASKS
from weightcast.zoo.tasks.base import SPLITS

from weightcast.collect.errors import CollectError, CorruptShardError
from weightcast.collect.index import build_index
from weightcast.collect.schema import (
    COMMITS_DIR,
    INDEX_NAME,
    RUN_STATUSES,
    ParamHistory,
    SchemaError,
    check_version,
    decode_sample,
    split_key,
)

__all__ = ["Collection", "decode_sample", "ParamHistory"]

ON_CORRUPT = ("raise", "skip")


class Collection:
    """A collection folder, read through its index. `allow_incomplete=True` reads the committed runs
    of an unfinished collection (no index yet, or a partial one) from its commit records."""

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False):
        self.root = Path(path)
        index_path = self.root / INDEX_NAME
        if index_path.is_file():
            self.index = json.loads(index_path.read_text())
            check_version(self.index, f"collection index {index_path}")
        elif allow_incomplete:
            self.index = build_index(self.root, allow_partial=True)
        else:
            raise CollectError(
                f"{self.root} has no {INDEX_NAME}: the collection is unfinished (run the same collect "
                f"command again, or `weightcast collect merge-index` after all parts) or not a collection; "
                f"Collection(path, allow_incomplete=True) reads its committed runs"
            )
        if not self.index["complete"] and not allow_incomplete:
            raise CollectError(
                f"the index of {self.root} is partial ({self.index['totals']['runs']} of "
                f"{self.index['expected_runs']} runs); pass allow_incomplete=True to read it anyway"
            )
        self.skipped_shards: list[str] = []  # shards skipped as corrupt by histories(on_corrupt="skip")
        self._records: dict[str, dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        return self.index["name"]

    @property
    def layer_types(self) -> list[str]:
        return list(self.index["layer_types"])

    def runs(
        self, *, task: str | None = None, arch: str | None = None, split: str | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Full run records (config, labels, status, per-epoch metrics, parameters) that match."""
        records = self._run_records()
        return [records[r["run_id"]] for r in self._select(task, arch, split, status)]

    def shard_urls(
        self, layer_type: str | None = None, *, task: str | None = None, arch: str | None = None,
        split: str | None = None, status: str | None = None,
    ) -> list[str]:
        """Paths of the shards that hold histories of `layer_type` (all types if None) of matching runs.
        A shard holds a whole group of runs: with filters, select samples by their run ID too."""
        _check_layer_type(layer_type)
        groups = {r["group_id"] for r in self._select(task, arch, split, status)}
        return [
            str(self.root / s["path"])
            for s in self.index["shards"]
            if s["group_id"] in groups and layer_type in (None, s["layer_type"])
        ]

    def histories(
        self, layer_type: str | None = None, *, task: str | None = None, arch: str | None = None,
        split: str | None = None, status: str | None = None, on_corrupt: str = "raise",
    ) -> Iterator[ParamHistory]:
        """Per-parameter histories of matching runs, one shard after another (one in memory at a time).

        A truncated or unreadable shard raises `CorruptShardError` naming it (`on_corrupt="raise"`),
        or is skipped with a warning and appended to `skipped_shards` (`"skip"`); a shard whose size
        disagrees with the index is skipped whole, one damaged in the middle after its intact samples."""
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        _check_layer_type(layer_type)
        selected = self._select(task, arch, split, status)
        wanted, groups = {r["run_id"] for r in selected}, {r["group_id"] for r in selected}
        for shard in self.index["shards"]:
            if shard["group_id"] not in groups or layer_type not in (None, shard["layer_type"]):
                continue
            try:
                yield from _read_shard(self.root, shard, wanted)
            except CorruptShardError as err:
                if on_corrupt == "raise":
                    raise
                warnings.warn(f"skipping {err}", stacklevel=2)
                self.skipped_shards.append(err.shard)

    def _select(
        self, task: str | None, arch: str | None, split: str | None, status: str | None
    ) -> list[dict[str, Any]]:
        # A misspelt filter would silently select nothing: names are checked against the vocabulary.
        if task is not None:
            TASKS.check(task)
        if arch is not None:
            ARCHITECTURES.check(arch)
        for key, value, valid in (("split", split, SPLITS), ("status", status, RUN_STATUSES)):
            if value is not None and value not in valid:
                raise ValueError(f"{key} must be one of {valid}, got {value!r}")
        wanted = {"task": task, "arch": arch, "split": split, "status": status}
        return [r for r in self.index["runs"] if all(v is None or r[k] == v for k, v in wanted.items())]

    def _run_records(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            groups = {r["group_id"] for r in self.index["runs"]}
            self._records = {}
            for group in sorted(groups):
                record = json.loads((self.root / COMMITS_DIR / f"{group}.json").read_text())
                self._records.update((run["run_id"], run) for run in record["runs"])
        return self._records


def _check_layer_type(layer_type: str | None) -> None:
    if layer_type is not None and layer_type not in LAYER_TYPES:
        raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}")


def _read_shard(root: Path, shard: dict[str, Any], wanted: set[str]) -> Iterator[ParamHistory]:
    """Decode one shard's samples of the `wanted` runs; `CorruptShardError` if anything is wrong."""
    path = root / shard["path"]
    size = path.stat().st_size if path.is_file() else None
    if size != shard["bytes"]:
        found = "is missing" if size is None else f"has {size} bytes"
        raise CorruptShardError(
            str(path), f"it {found}, the index says {shard['bytes']} (truncated or replaced)"
        )
    count = 0
    try:
        for sample in wds.tarfile_samples([{"url": str(path)}]):
            count += 1
            run_id, _ = split_key(sample["__key__"])
            if run_id in wanted:
                yield decode_sample(sample)
    except (SchemaError, CollectError):
        raise
    except Exception as err:  # tarfile, safetensors or JSON errors: the bytes are damaged
        # webdataset appends the stream and URL to the arguments; the first one is the message.
        message = err.args[0] if err.args else err
        raise CorruptShardError(str(path), f"{type(err).__name__}: {message}") from err
    if count != shard["samples"]:
        raise CorruptShardError(str(path), f"it holds {count} samples, the index says {shard['samples']}")

