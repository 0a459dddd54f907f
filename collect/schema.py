"""The shard contract of weightcast (collect writes it; collect's reader, train_predictor and eval
read it). Everything about the on-disk format lives here, versioned by `SCHEMA_VERSION`.

A collection folder:

    config.yaml, meta.json     the resolved collection config and the versions that wrote it
    manifest.json              schema version, name, population hash and the run IDs it holds
    shards/<layer_type>/<group_id>.tar
                               webdataset shards, one folder per layer type, so a predictor for
                               one layer type reads only its own folder
    commits/<group_id>.json    one commit record per group of finished runs: the runs (full run
                               records) and the shards that hold them; a run is complete iff it
                               appears in a commit record
    collection.json            the index, built from the commit records, written last and atomically
    log.txt                    one line per finished run
    spool/                     raw snapshots of runs in progress (deleted as runs finish)

One sample = the whole history of one parameter tensor of one run, key `<run_id>-p<index>`
(webdataset keys end at the first dot, so parameter names, which have dots, live in the meta):

    <key>.meta.json            {schema_version, run_id, param_name, param_index, layer_type,
                                shape, dtype, epochs, steps, history_sha256}
    <key>.history.safetensors  one tensor "history" of shape (T, *shape) in the collection dtype,
                               T = number of snapshots (epoch 0 = the initial weights)

No member is ever pickled; tensors are safetensors bytes, metadata is JSON. Every reader checks a
shard's size and sample count against the index and each history's bytes against `history_sha256`.

Versions: 1 had no checksums (refused: collect again); 2 adds `history_sha256` to each sample's meta.
Names that an index or commit record gives (group IDs, layer types, shard paths) must be plain names
(`check_index`, `check_commit_record`): a collection is data, and its paths may be appended to a
`pipe:` location.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from weightcast.collect.errors import CollectError, CorruptShardError

__all__ = [
    "SCHEMA_VERSION",
    "DTYPES",
    "RUN_STATUSES",
    "INDEX_NAME",
    "MANIFEST_NAME",
    "COMMITS_DIR",
    "SHARDS_DIR",
    "SPOOL_DIR",
    "LOG_NAME",
    "META_MEMBER",
    "HISTORY_MEMBER",
    "HISTORY_TENSOR",
    "SchemaError",
    "ParamHistory",
    "sample_key",
    "split_key",
    "shard_name",
    "encode_sample",
    "decode_sample",
    "check_version",
    "check_index",
    "check_commit_record",
    "checksum",
]

SCHEMA_VERSION = 2
# What changed in each older version, for the message that refuses it.
_OLD_VERSIONS = {1: "version 1 shards carry no checksums, so damaged tensors cannot be detected"}

# Collection dtype name -> torch dtype of the stored histories.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# Status of a committed run: trained to the end, or stopped at a non-finite loss.
RUN_STATUSES = ("complete", "diverged")

INDEX_NAME = "collection.json"
MANIFEST_NAME = "manifest.json"
COMMITS_DIR = "commits"
SHARDS_DIR = "shards"
SPOOL_DIR = "spool"
LOG_NAME = "log.txt"

META_MEMBER = "meta.json"
HISTORY_MEMBER = "history.safetensors"
HISTORY_TENSOR = "history"

_KEY_SEPARATOR = "-p"


class SchemaError(CollectError, ValueError):
    """A file or sample does not follow this version of the shard contract (another version, a
    missing field, a name that is not a plain name)."""


@dataclass
class ParamHistory:
    """The recorded history of one parameter tensor of one run."""

    run_id: str
    param_name: str  # as in model.named_parameters(), e.g. "layers.0.weight"
    param_index: int  # position in named_parameters()
    layer_type: str  # one of zoo.layer_types.LAYER_TYPES
    values: torch.Tensor  # (T, *shape) in the collection dtype; values[0] = the initial weights
    epochs: list[float]  # epoch of each snapshot (fractional for snapshots every N steps)
    steps: list[int]  # optimizer steps taken at each snapshot


def sample_key(run_id: str, param_index: int) -> str:
    """`<run_id>-p<index>`: unique within a collection, dot-free (webdataset splits at dots)."""
    return f"{run_id}{_KEY_SEPARATOR}{param_index:04d}"


def split_key(key: str) -> tuple[str, int]:
    """(run_id, param_index) of a sample key."""
    run_id, sep, index = key.rpartition(_KEY_SEPARATOR)
    if not sep or not index.isdigit():
        raise SchemaError(f"sample key {key!r} is not of the form <run_id>{_KEY_SEPARATOR}<index>")
    return run_id, int(index)


def shard_name(layer_type: str, group_id: str) -> str:
    """Path of a group's shard for one layer type, relative to the collection folder."""
    return f"{SHARDS_DIR}/{layer_type}/{group_id}.tar"


def encode_sample(history: ParamHistory) -> dict[str, Any]:
    """The webdataset sample (member suffix -> bytes) of one parameter's history."""
    dtype_name = _dtype_name(history.values.dtype)
    meta = {
        "schema_version": SCHEMA_VERSION,
        "run_id": history.run_id,
        "param_name": history.param_name,
        "param_index": history.param_index,
        "layer_type": history.layer_type,
        "shape": list(history.values.shape[1:]),
        "dtype": dtype_name,
        "epochs": history.epochs,
        "steps": history.steps,
    }
    payload = save_safetensors({HISTORY_TENSOR: history.values.contiguous()})
    meta["history_sha256"] = checksum(payload)
    return {
        "__key__": sample_key(history.run_id, history.param_index),
        META_MEMBER: json.dumps(meta).encode(),
        HISTORY_MEMBER: payload,
    }


def checksum(payload: bytes) -> str:
    """The sha256 (hex) of a sample's history bytes, as its meta records it."""
    return hashlib.sha256(payload).hexdigest()


def decode_sample(sample: dict[str, Any]) -> ParamHistory:
    """A webdataset sample (as `wds.WebDataset` or `wds.tarfile_samples` yields it) -> ParamHistory.

    Raises `CorruptShardError` (naming the shard, `sample["__url__"]`) for damaged bytes: a history
    whose sha256 differs from its meta's, unreadable meta or tensor, missing or inconsistent members;
    `SchemaError` for a sample of another schema version."""
    shard, key = str(sample.get("__url__", "<unknown shard>")), sample.get("__key__")
    missing = [m for m in (META_MEMBER, HISTORY_MEMBER) if m not in sample]
    if missing:
        raise CorruptShardError(shard, f"sample {key!r} lacks member(s) {missing}")
    try:
        meta = json.loads(sample[META_MEMBER])
    except ValueError as err:  # also UnicodeDecodeError
        raise CorruptShardError(shard, f"sample {key!r} has unreadable metadata ({err})") from None
    if not isinstance(meta, dict):
        raise CorruptShardError(shard, f"sample {key!r} has metadata that is not a JSON object")
    check_version(meta, f"sample {key!r} of {shard}")
    payload = bytes(sample[HISTORY_MEMBER])
    if checksum(payload) != meta.get("history_sha256"):
        raise CorruptShardError(
            shard, f"sample {key!r}: the history's sha256 differs from its metadata's (damaged bytes)"
        )
    try:
        values = load_safetensors(payload)[HISTORY_TENSOR]  # (T, *shape)
        consistent = list(values.shape[1:]) == meta["shape"] and len(values) == len(meta["epochs"])
    except Exception as err:  # safetensors' errors, a missing key: the bytes do not say what meta says
        raise CorruptShardError(shard, f"sample {key!r}: {type(err).__name__}: {err}") from None
    if not consistent:
        raise CorruptShardError(
            shard,
            f"sample {key!r}: history of shape {tuple(values.shape)} does not match its meta "
            f"(shape {meta['shape']}, {len(meta['epochs'])} snapshots)",
        )
    return ParamHistory(
        run_id=meta["run_id"],
        param_name=meta["param_name"],
        param_index=meta["param_index"],
        layer_type=meta["layer_type"],
        values=values,
        epochs=meta["epochs"],
        steps=meta["steps"],
    )


def check_version(obj: dict[str, Any], where: str) -> None:
    """Raise `SchemaError` unless `obj["schema_version"]` is the version this code reads."""
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        why = f" ({_OLD_VERSIONS[version]})" if version in _OLD_VERSIONS else ""
        raise SchemaError(
            f"{where} has schema version {version!r}, but this weightcast reads and writes version "
            f"{SCHEMA_VERSION}{why}; collect again with this version (the same collect command into a "
            f"new out_dir), or read it with the weightcast version that wrote it"
        )


# Group IDs, layer types: plain names. Shard paths must be exactly shard_name(layer type, group ID).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_index(index: Any, where: str) -> dict[str, Any]:
    """`index` (a parsed collection.json) if it has this version's shape and plain names, else
    `SchemaError` naming `where` and how to rebuild it."""
    fix = "rebuild it from the commit records with `weightcast collect merge-index <collection folder>`"
    if not isinstance(index, dict):
        raise SchemaError(f"{where} is not a JSON object; {fix}")
    check_version(index, where)
    _check_fields(index, {"name": str, "complete": bool, "expected_runs": int, "totals": dict,
                          "layer_types": dict, "runs": list, "shards": list}, where, fix)  # fmt: skip
    for run in index["runs"]:
        _check_fields(run, {"run_id": str, "group_id": str, "status": str}, f"{where}: a run", fix)
        _check_name(run["group_id"], "group_id", where, fix)
    for shard in index["shards"]:
        _check_shard_entry(shard, f"{where}: a shard", fix)
        if not isinstance(shard.get("group_id"), str):
            raise SchemaError(f"{where}: a shard entry has no group_id; {fix}")
        _check_shard_path(shard, shard["group_id"], where, fix)
    return index


def check_commit_record(record: Any, where: str) -> dict[str, Any]:
    """`record` (a parsed commits/<group>.json) if it has this version's shape, else `SchemaError`."""
    fix = (
        "delete it and run the same collect command again: the runs it listed are trained again "
        "(their shards are deleted as unreferenced)"
    )
    if not isinstance(record, dict):
        raise SchemaError(f"{where} is not a JSON object; {fix}")
    check_version(record, where)
    _check_fields(record, {"group_id": str, "runs": list, "shards": list}, where, fix)
    _check_name(record["group_id"], "group_id", where, fix)
    for run in record["runs"]:
        _check_fields(run, {"run_id": str}, f"{where}: a run", fix)
    for shard in record["shards"]:
        _check_shard_entry(shard, f"{where}: a shard", fix)
        _check_shard_path(shard, record["group_id"], where, fix)
    return record


def _check_fields(obj: Any, types: dict[str, type], where: str, fix: str) -> None:
    if not isinstance(obj, dict):
        raise SchemaError(f"{where} is not a JSON object; {fix}")
    for key, kind in types.items():
        if not isinstance(obj.get(key), kind) or (kind is int and isinstance(obj.get(key), bool)):
            found = "nothing" if key not in obj else f"a {type(obj[key]).__name__}"
            raise SchemaError(f"{where}: field {key!r} must be a {kind.__name__}, found {found}; {fix}")


def _check_name(value: str, field_name: str, where: str, fix: str) -> None:
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise SchemaError(
            f"{where}: {field_name} {value!r} is not a plain name (letters, digits, '_', '.', '-'); "
            f"a collection's names never reach a shell or leave the folder; {fix}"
        )


def _check_shard_entry(shard: Any, where: str, fix: str) -> None:
    _check_fields(shard, {"path": str, "layer_type": str, "samples": int, "bytes": int}, where, fix)
    _check_name(shard["layer_type"], "layer_type", where, fix)


def _check_shard_path(shard: dict[str, Any], group_id: str, where: str, fix: str) -> None:
    _check_name(group_id, "group_id", where, fix)
    expected = shard_name(shard["layer_type"], group_id)
    if shard["path"] != expected:
        raise SchemaError(f"{where}: shard path {shard['path']!r} should be {expected!r}; {fix}")


def _dtype_name(dtype: torch.dtype) -> str:
    for name, candidate in DTYPES.items():
        if candidate == dtype:
            return name
    raise SchemaError(f"histories are stored as {', '.join(DTYPES)}, not {dtype}")
