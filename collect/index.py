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
from weightcast.collect.schema import INDEX_NAME, SCHEMA_VERSION

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
    records = folder.commit_records()
    runs: dict[str, dict[str, Any]] = {}
    shards: list[dict[str, Any]] = []
    for record in records:
        for run in record["runs"]:
            if run["run_id"] in runs:
                raise CollectError(
                    f"run {run['run_id']} is committed twice (groups {runs[run['run_id']]['group_id']} and "
                    f"{record['group_id']}): two processes ran the same part; delete one of the two "
                    f"commit records"
                )
            runs[run["run_id"]] = run
        for shard in record["shards"]:
            _check_shard(folder.root, shard)
            shards.append({**shard, "group_id": record["group_id"]})
    expected = set(manifest["runs"])
    missing, foreign = expected - set(runs), set(runs) - expected
    if foreign:
        raise CollectError(
            f"{len(foreign)} committed runs are not in the manifest of {folder.root} (e.g. {min(foreign)})"
        )
    if missing and not allow_partial:
        raise CollectError(
            f"{len(missing)} of {len(expected)} runs of {folder.root} are not committed yet; finish them "
            f"(run the collection again, or every part of it) or build a partial index (--partial)"
        )
    layer_types: dict[str, Counter] = {}
    for shard in shards:
        stats = layer_types.setdefault(shard["layer_type"], Counter())
        stats.update(shards=1, trajectories=shard["samples"], bytes=shard["bytes"])
    for run in runs.values():
        for layer_type, scalars in run["layer_type_counts"].items():
            layer_types[layer_type].update(scalars=scalars, parameter_epochs=scalars * run["snapshots"])
    ordered = [runs[k] for k in sorted(runs)]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": manifest["name"],
        "population_hash": manifest["population_hash"],
        "record": manifest["record"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": not missing,
        "expected_runs": len(expected),
        "totals": {
            "runs": len(runs),
            "diverged": sum(r["status"] == "diverged" for r in ordered),
            "trajectories": sum(s["samples"] for s in shards),
            "scalars": sum(r["num_params"] for r in ordered),
            "parameter_epochs": sum(r["num_params"] * r["snapshots"] for r in ordered),
            "shards": len(shards),
            "bytes": sum(s["bytes"] for s in shards),
        },
        "layer_types": {k: dict(sorted(v.items())) for k, v in sorted(layer_types.items())},
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


def _check_shard(root: Path, shard: dict[str, Any]) -> None:
    path = root / shard["path"]
    size = path.stat().st_size if path.is_file() else None
    if size != shard["bytes"]:
        found = "is missing" if size is None else f"has {size} bytes"
        raise CollectError(f"shard {path} {found}, but its commit record says {shard['bytes']} bytes")
