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
                                shape, dtype, epochs, steps}
    <key>.history.safetensors  one tensor "history" of shape (T, *shape) in the collection dtype,
                               T = number of snapshots (epoch 0 = the initial weights)

No member is ever pickled; tensors are safetensors bytes, metadata is JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from weightcast.errors import WeightcastError

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
]

SCHEMA_VERSION = 1

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


class SchemaError(WeightcastError, ValueError):
    """A file or sample does not follow this version of the shard contract."""


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
    values = history.values.contiguous()
    return {
        "__key__": sample_key(history.run_id, history.param_index),
        META_MEMBER: json.dumps(meta).encode(),
        HISTORY_MEMBER: save_safetensors({HISTORY_TENSOR: values}),
    }


def decode_sample(sample: dict[str, Any]) -> ParamHistory:
    """A webdataset sample (as `wds.WebDataset` or `wds.tarfile_samples` yields it) -> ParamHistory.

    Raises `SchemaError` for a sample of another schema version or with missing/inconsistent members."""
    missing = [m for m in (META_MEMBER, HISTORY_MEMBER) if m not in sample]
    if missing:
        raise SchemaError(f"sample {sample.get('__key__')!r} lacks member(s) {missing}")
    meta = json.loads(sample[META_MEMBER])
    check_version(meta, f"sample {sample.get('__key__')!r}")
    values = load_safetensors(bytes(sample[HISTORY_MEMBER]))[HISTORY_TENSOR]  # (T, *shape)
    if list(values.shape[1:]) != meta["shape"] or len(values) != len(meta["epochs"]):
        raise SchemaError(
            f"sample {sample.get('__key__')!r}: history of shape {tuple(values.shape)} does not match "
            f"its meta (shape {meta['shape']}, {len(meta['epochs'])} snapshots)"
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
        raise SchemaError(
            f"{where} has schema version {version!r}, but this weightcast reads and writes version "
            f"{SCHEMA_VERSION}; use the weightcast version that wrote it, or collect again"
        )


def _dtype_name(dtype: torch.dtype) -> str:
    for name, candidate in DTYPES.items():
        if candidate == dtype:
            return name
    raise SchemaError(f"histories are stored as {', '.join(DTYPES)}, not {dtype}")
