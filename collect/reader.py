"""Reading a collection (collect -> train_predictor, eval): per-run metadata and per-parameter
histories as tensors, filtered by layer type, task, architecture, split or status, from a local
folder or a URL (`http://host/collection`, `pipe:<your command prefix>`). Built on webdataset's tar
stages; no pickle anywhere (JSON metadata, safetensors tensors).

    collection = Collection("runs/collect/debug")
    for h in collection.histories(layer_type="conv", split="train"):
        h.values            # (T, *shape): the parameter before training and after every epoch
    # a predictor-training pipeline reads one layer type's shards through the same checks:
    wds.DataPipeline(wds.SimpleShardList(collection.shard_urls("conv")),
                     collection.read_samples, wds.map(decode_sample))

Every read is checked against the index: a shard's size and its number of samples
(`read_samples`), each history's sha256 (`decode_sample`). Damage raises `CorruptShardError` naming
the shard, what is wrong and how to recover; nothing is silently left out. The index and commit
records are checked for their shape and for plain names (`schema.check_index`) before any of their
names is joined to the location, so a collection's contents never reach a shell.
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

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
    check_commit_record,
    check_index,
    decode_sample,
    split_key,
)

__all__ = ["Collection", "decode_sample", "sample_run_id", "ParamHistory", "is_url"]

ON_CORRUPT = ("raise", "skip")

# What to do about a damaged shard, said once for every message that reports one.
_RECOVER = (
    "restore the file from a copy, or delete the commit record of its group ({record}) and run the "
    "same collect command again: the group's runs are trained again and the index rebuilt"
)


class Collection:
    """A collection, read through its index: a local folder or a URL webdataset opens (the index and
    commit records are read from under it). `allow_incomplete=True` reads the committed runs of an
    unfinished local collection (no index yet, or a partial one) from its commit records.

    `location` is what was given (a string); `root` is it as a `Path` for a local folder."""

    def __init__(self, path: str | Path, *, allow_incomplete: bool = False):
        self.location = str(path)
        self.root: Path | str = self.location if is_url(self.location) else Path(path)
        if is_url(self.location):
            index = _read_json(self._url(INDEX_NAME), "collection index")
        elif (Path(path) / INDEX_NAME).is_file():
            index = _read_json(str(Path(path) / INDEX_NAME), "collection index")
        elif allow_incomplete:
            index = build_index(self.root, allow_partial=True)
        else:
            raise CollectError(
                f"{self.root} has no {INDEX_NAME}: the collection is unfinished (run the same collect "
                f"command again, or `weightcast collect merge-index` after all parts) or not a collection; "
                f"Collection(path, allow_incomplete=True) reads its committed runs"
            )
        self.index = check_index(index, f"collection index {self._url(INDEX_NAME)}")
        if not self.index["complete"] and not allow_incomplete:
            raise CollectError(
                f"the index of {self.root} is partial ({self.index['totals'].get('runs')} of "
                f"{self.index['expected_runs']} runs); pass allow_incomplete=True to read it anyway"
            )
        self.skipped_shards: list[str] = []  # shards skipped as corrupt by histories(on_corrupt="skip")
        self._records: dict[str, dict[str, Any]] | None = None
        # url -> its index entry: what read_samples checks each shard against
        self._shards = {self._url(s["path"]): s for s in self.index["shards"]}

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
        split: str | None = None, status: str | None = None, run_ids: Iterable[str] | None = None,
    ) -> list[str]:
        """Paths (URLs) of the shards that hold histories of `layer_type` (all types if None) of
        matching runs (and, if given, of one of `run_ids`). A shard holds a whole group of runs: with
        filters, select samples by their run ID too (`read_samples(..., run_ids=...)`)."""
        _check_layer_type(layer_type)
        selected = self._select(task, arch, split, status)
        if run_ids is not None:
            wanted = set(run_ids)
            selected = [r for r in selected if r["run_id"] in wanted]
        groups = {r["group_id"] for r in selected}
        return [
            self._url(s["path"])
            for s in self.index["shards"]
            if s["group_id"] in groups and layer_type in (None, s["layer_type"])
        ]

    def read_samples(
        self, shards: Iterable[dict[str, Any]], run_ids: Iterable[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Webdataset stage: shards (`{"url": ...}` of `shard_urls`, as `wds.SimpleShardList` yields
        them) -> their raw samples (of `run_ids` only, if given; decode them with `decode_sample`).

        Each shard is checked against the index: its size (before reading a local file, and after
        reading any) and its number of samples; a mismatch or unreadable bytes raise
        `CorruptShardError` naming the shard, so a damaged collection is never read as a smaller one."""
        wanted = None if run_ids is None else set(run_ids)
        for source in shards:
            url = source["url"]
            if url not in self._shards:
                raise CollectError(f"{url} is not a shard of collection {self.name!r} ({self.location})")
            yield from self._read_shard(url, self._shards[url], wanted)

    def histories(
        self, layer_type: str | None = None, *, task: str | None = None, arch: str | None = None,
        split: str | None = None, status: str | None = None, on_corrupt: str = "raise",
    ) -> Iterator[ParamHistory]:
        """Per-parameter histories of matching runs, one shard after another (one in memory at a time).

        A truncated or unreadable shard, or a history whose checksum fails, raises `CorruptShardError`
        naming it (`on_corrupt="raise"`), or is skipped with a warning and appended to
        `skipped_shards` (`"skip"`); a shard whose size disagrees with the index is skipped whole,
        one damaged in the middle after its intact samples."""
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        selected = self._select(task, arch, split, status)
        wanted = {r["run_id"] for r in selected}
        for url in self.shard_urls(layer_type, task=task, arch=arch, split=split, status=status):
            try:
                for sample in self.read_samples([{"url": url}], wanted):
                    yield decode_sample(sample)
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
        return [r for r in self.index["runs"] if all(v is None or r.get(k) == v for k, v in wanted.items())]

    def _run_records(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            records: dict[str, dict[str, Any]] = {}
            for group in sorted({r["group_id"] for r in self.index["runs"]}):
                url = self._url(f"{COMMITS_DIR}/{group}.json")
                if not is_url(self.location) and not Path(url).is_file():
                    raise CollectError(
                        f"commit record {url} is missing, but the index lists runs of group {group}; "
                        f"run the same collect command again (into {self.location}): it trains that "
                        f"group's runs again and rebuilds the index"
                    )
                record = check_commit_record(_read_json(url, "commit record"), f"commit record {url}")
                records.update((run["run_id"], run) for run in record["runs"])
            missing = [r["run_id"] for r in self.index["runs"] if r["run_id"] not in records]
            if missing:
                raise CollectError(
                    f"the index of {self.location} lists {len(missing)} run(s) (e.g. {missing[0]}) that no "
                    f"commit record holds; rebuild it with `weightcast collect merge-index {self.location}`"
                )
            self._records = records
        return self._records

    def _url(self, relative: str) -> str:
        """`relative` (a checked plain path of the index) under the location; quoted for a shell if
        the location is a `pipe:` command (webdataset runs those with a shell)."""
        if not is_url(self.location):
            return str(Path(self.location) / relative)
        tail = shlex.quote(relative) if self.location.startswith("pipe:") else relative
        return f"{self.location.rstrip('/')}/{tail}"

    def _read_shard(
        self, url: str, shard: dict[str, Any], wanted: set[str] | None
    ) -> Iterator[dict[str, Any]]:
        """The samples of one shard (of the `wanted` runs), checked against its index entry."""
        record = self._url(f"{COMMITS_DIR}/{shard['group_id']}.json")
        recover = _RECOVER.format(record=record)
        if not is_url(self.location):
            size = Path(url).stat().st_size if Path(url).is_file() else None
            if size != shard["bytes"]:
                found = "is missing" if size is None else f"has {size} bytes"
                raise CorruptShardError(
                    url, f"it {found}, the index says {shard['bytes']} (truncated or replaced); {recover}"
                )
        count = 0
        try:
            with _CountingReader(wds.gopen(url, "rb")) as stream:
                expanded = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}])
                for sample in wds.tariterators.group_by_keys(expanded):
                    count += 1
                    if wanted is None or split_key(sample["__key__"])[0] in wanted:
                        yield sample
                stream.drain()
                size = stream.count
        except (SchemaError, CollectError):
            raise
        except Exception as err:  # tarfile, gopen or key errors: the bytes are damaged
            # webdataset appends the stream and URL to the arguments; the first one is the message.
            message = err.args[0] if err.args else err
            raise CorruptShardError(url, f"{type(err).__name__}: {message}; {recover}") from err
        if count != shard["samples"]:
            raise CorruptShardError(
                url, f"it holds {count} samples, the index says {shard['samples']}; {recover}"
            )
        if size != shard["bytes"]:
            raise CorruptShardError(
                url, f"{size} bytes were read, the index says {shard['bytes']} (truncated); {recover}"
            )


def sample_run_id(sample: dict[str, Any]) -> str:
    """The run ID of a raw sample (from its key, without decoding it)."""
    return split_key(sample["__key__"])[0]


def is_url(location: str) -> bool:
    """Whether a collection location is a URL webdataset opens rather than a local folder."""
    return "://" in location or location.startswith("pipe:")


class _CountingReader:
    """A binary stream that counts the bytes read through it (a shard's size, for any URL)."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data

    def drain(self) -> None:
        """Read to the end (tarfile stops at the end-of-archive blocks, before the padding)."""
        while self.read(1 << 20):
            pass

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stream.close()


def _check_layer_type(layer_type: str | None) -> None:
    if layer_type is not None and layer_type not in LAYER_TYPES:
        raise ValueError(f"layer_type must be one of {LAYER_TYPES}, got {layer_type!r}")


def _read_json(url: str, what: str) -> Any:
    """A JSON file of a collection; `CollectError` naming it if it cannot be read or parsed."""
    try:
        with wds.gopen(url, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError) as err:  # ValueError: JSON and UnicodeDecodeError
        raise CollectError(
            f"cannot read {what} {url} ({type(err).__name__}: {err}); if the location is right, the file "
            f"is damaged: for an index run `weightcast collect merge-index <collection folder>`"
        ) from None
