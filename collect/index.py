"""The index of a collection (collect): `collection.json`, built from the commit records and written
last and atomically, so a reader never takes a half-finished collection for a complete one.
`write_index` is also `weightcast collect merge-index`: after the parts of a job array finish, it
builds one index over all of them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from weightcast.zoo.rundir import write_json_atomic

from weightcast.collect.errors import CollectError, disk_full_is_fatal
from weightcast.collect.folder import CollectionFolder
from weightcast.collect.schema import COMMITS_DIR, INDEX_NAME, SCHEMA_VERSION

__all__ = ["build_index", "write_index", "index_summary", "RUN_SUMMARY_KEYS"]

# What the index keeps of each run; the full record (metrics, parameters, config) is in its commit record.
RUN_SUMMARY_KEYS = (
    "run_id", "group_id", "arch", "task", "split", "optimizer", "lr", "schedule", "batch_size",
    "augmentation", "init", "epochs", "seed", "status", "metric_name", "final_metric", "seconds",
    "snapshots", "num_params",
)


def build_index(root: str | Path, *, allow_partial: bool = False) -> dict[str, Any]:
    """The index of the collection at `root`, from its manifest and commit records.

    Raises `CollectError` if runs are missing (unless `allow_partial`; the index then says
    `complete: false`), if a run was committed twice, or if a shard is missing or of another size."""
    folder = CollectionFolder(root)
    manifest = folder.manifest()
    runs, shards = _committed(folder)
    missing = _check_against_manifest(folder.root, manifest, runs, allow_partial)
    ordered = [runs[k] for k in sorted(runs)]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": manifest["name"],
        "population_hash": manifest["population_hash"],
        "record": manifest["record"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": not missing,
        "expected_runs": len(manifest["runs"]),
        "totals": _totals(ordered, shards),
        "layer_types": _layer_type_stats(ordered, shards),
        "runs": [{k: r[k] for k in RUN_SUMMARY_KEYS} for r in ordered],
        "shards": sorted(shards, key=lambda s: s["path"]),
    }


def write_index(root: str | Path, *, allow_partial: bool = False) -> dict[str, Any]:
    """Build the index and write it atomically to `<root>/collection.json`; returns it."""
    index = build_index(root, allow_partial=allow_partial)
    path = Path(root) / INDEX_NAME
    with disk_full_is_fatal(path):
        write_json_atomic(path, index)
    return index


def index_summary(index: dict[str, Any]) -> str:
    """Human-readable lines: runs, divergences, trajectories per layer type, parameter-epochs, bytes."""
    t = index["totals"]
    state = "complete" if index["complete"] else f"PARTIAL: {t['runs']} of {index['expected_runs']} runs"
    lines = [
        f"collection {index['name']!r} ({state}): {t['runs']} runs, {t['diverged']} diverged, "
        f"{t['trajectories']:,} trajectories, {t['parameter_epochs']:,} parameter-epochs, "
        f"{t['shards']} shards, {t['bytes'] / 1e6:,.1f} MB"
    ]
    for layer_type, s in index["layer_types"].items():
        lines.append(
            f"  {layer_type:<10} {s['trajectories']:>8,} trajectories {s['scalars']:>13,} scalars "
            f"{s['shards']:>5} shards {s['bytes'] / 1e6:>10,.1f} MB"
        )
    return "\n".join(lines)


def _committed(folder: CollectionFolder) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(run ID -> run record, shard entries with their group ID) of every commit record; each run
    once, each shard present with the size its record says."""
    runs: dict[str, dict[str, Any]] = {}
    shards: list[dict[str, Any]] = []
    for record in folder.commit_records():
        for run in record["runs"]:
            if run["run_id"] in runs:
                raise CollectError(
                    f"run {run['run_id']} is committed twice (groups {runs[run['run_id']]['group_id']} and "
                    f"{record['group_id']}): two processes ran the same part; delete one of the two "
                    f"commit records"
                )
            runs[run["run_id"]] = run
        for shard in record["shards"]:
            _check_shard(folder.root, shard, record["group_id"])
            shards.append({**shard, "group_id": record["group_id"]})
    return runs, shards


def _check_against_manifest(
    root: Path, manifest: dict[str, Any], runs: dict[str, Any], allow_partial: bool
) -> set[str]:
    """The manifest's runs that are not committed; `CollectError` for a committed run the manifest
    does not know, or for missing runs unless `allow_partial`."""
    expected = set(manifest["runs"])
    missing, foreign = expected - set(runs), set(runs) - expected
    if foreign:
        raise CollectError(
            f"{len(foreign)} committed runs are not in the manifest of {root} (e.g. {min(foreign)})"
        )
    if missing and not allow_partial:
        raise CollectError(
            f"{len(missing)} of {len(expected)} runs of {root} are not committed yet; finish them "
            f"(run the collection again, or every part of it) or build a partial index (--partial)"
        )
    return missing


def _totals(runs: list[dict[str, Any]], shards: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "runs": len(runs),
        "diverged": sum(r["status"] == "diverged" for r in runs),
        "trajectories": sum(s["samples"] for s in shards),
        "scalars": sum(r["num_params"] for r in runs),
        "parameter_epochs": sum(r["num_params"] * r["snapshots"] for r in runs),
        "shards": len(shards),
        "bytes": sum(s["bytes"] for s in shards),
    }


def _layer_type_stats(runs: list[dict[str, Any]], shards: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per layer type: shards, trajectories, bytes, scalars and parameter-epochs, sorted by name."""
    stats: dict[str, Counter] = {}
    for shard in shards:
        stats.setdefault(shard["layer_type"], Counter()).update(
            shards=1, trajectories=shard["samples"], bytes=shard["bytes"]
        )
    for run in runs:
        for layer_type, scalars in run["layer_type_counts"].items():
            stats.setdefault(layer_type, Counter()).update(
                scalars=scalars, parameter_epochs=scalars * run["snapshots"]
            )
    return {k: dict(sorted(v.items())) for k, v in sorted(stats.items())}


def _check_shard(root: Path, shard: dict[str, Any], group_id: str) -> None:
    path = root / shard["path"]
    size = path.stat().st_size if path.is_file() else None
    if size != shard["bytes"]:
        found = "is missing" if size is None else f"has {size} bytes"
        record = root / COMMITS_DIR / f"{group_id}.json"
        raise CollectError(
            f"shard {path} {found}, but its commit record {record} says {shard['bytes']} bytes. Restore "
            f"the file from a copy, or delete {record} and run the same collect command again: the "
            f"runs of group {group_id} are trained again (their other shards are deleted as unreferenced)"
        )
