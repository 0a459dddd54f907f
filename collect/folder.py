"""The collection folder (collect): its manifest, its commit records, and the recovery that makes a
collection resumable after a crash. See `collect.schema` for the layout.

On every start, `prepare` refuses a folder that holds another collection (another schema version, or
another population of which a run is committed; a folder where nothing was committed and no session
runs takes the new population), and `clean` deletes what a crash of this prefix left behind:
temporary shards, shards that no commit record references, spool files and the temporary files of
atomic JSON writes.
A SIGKILL can leave such files at any moment; they never make a folder look foreign.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from weightcast.zoo.rundir import prepare_run_dir, write_json_atomic

from weightcast.collect.errors import CollectError, disk_full_is_fatal
from weightcast.collect.schema import (
    COMMITS_DIR,
    INDEX_NAME,
    LOG_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SHARDS_DIR,
    SPOOL_DIR,
    check_commit_record,
    check_version,
)

__all__ = ["CollectionFolder"]

# Everything a collection folder may hold; anything else means it is not (only) a collection.
_LOCKS_DIR = "locks"
_OWN_NAMES = {
    "config.yaml", "meta.json", MANIFEST_NAME, COMMITS_DIR, SHARDS_DIR, SPOOL_DIR, LOG_NAME, INDEX_NAME,
    _LOCKS_DIR, "wandb",
}  # fmt: skip
# Files written by `prepare` (config.yaml is rewritten whole on every start).
_PREPARED = ("meta.json", MANIFEST_NAME)


def _atomic_temps(folder: Path, name: str) -> list[Path]:
    """Temporary files of `write_json_atomic(folder / name)`: `.<name>.<random>.tmp`."""
    return sorted(folder.glob(f".{name}.*.tmp"))


class CollectionFolder:
    def __init__(self, root: str | Path, spool_dir: str | Path | None = None):
        self.root = Path(root)
        self.spool_dir = Path(spool_dir) if spool_dir else self.root / SPOOL_DIR

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.is_file():
            raise CollectError(f"{self.root} is not a collection folder (it has no {MANIFEST_NAME})")
        manifest = _read_json(self.manifest_path)
        if not isinstance(manifest, dict):
            raise CollectError(
                f"{self.manifest_path} is not a JSON object; it was damaged after it was written: restore "
                f"it, or collect into a new out_dir"
            )
        check_version(manifest, f"collection {self.root}")
        absent = [k for k in ("name", "population_hash", "record", "runs") if k not in manifest]
        if absent:
            raise CollectError(
                f"{self.manifest_path} lacks {absent}; it was damaged after it was written: restore it, or "
                f"collect into a new out_dir"
            )
        return manifest

    def prepare(
        self, config: Any, name: str, population_hash: str, run_ids: list[str], record: dict[str, Any]
    ) -> None:
        """Create the folder, or check that it holds this very collection; write config and manifest.
        Temporary files of an interrupted `prepare` (a SIGKILL during the first manifest write) are
        deleted first: sessions of all parts prepare one after another, under a folder-wide lock."""
        self._refuse_foreign()  # before writing anything into a folder that is not ours
        self.root.mkdir(parents=True, exist_ok=True)
        with self._flock(self.root / _LOCKS_DIR / "prepare.lock", blocking=True):
            for written in _PREPARED:
                for tmp in _atomic_temps(self.root, written):
                    tmp.unlink(missing_ok=True)
            self._prepare(config, name, population_hash, run_ids, record)

    def _refuse_foreign(self) -> None:
        """`CollectError` if the folder has no manifest but holds files that are not a collection's
        (our own temporary files do not count) or commit records."""
        if self.manifest_path.is_file() or not self.root.is_dir():
            return
        temps = {p.name for written in _PREPARED for p in _atomic_temps(self.root, written)}
        foreign = sorted(p.name for p in self.root.iterdir() if p.name not in _OWN_NAMES | temps)
        if foreign or (self.root / COMMITS_DIR).is_dir():
            raise CollectError(
                f"out_dir {self.root} is not empty and holds no collection manifest "
                f"({', '.join(foreign) or 'commit records'}); choose an empty or new out_dir"
            )

    def _prepare(
        self, config: Any, name: str, population_hash: str, run_ids: list[str], record: dict[str, Any]
    ) -> None:
        if self.manifest_path.is_file():
            old = _read_json(self.manifest_path)
            if not isinstance(old, dict):
                raise CollectError(f"{self.manifest_path} is not a JSON object; choose another out_dir")
            if old.get("schema_version") != SCHEMA_VERSION:
                raise CollectError(
                    f"{self.root} holds a collection of schema version {old.get('schema_version')!r}; this "
                    f"weightcast writes version {SCHEMA_VERSION}. Choose another out_dir."
                )
            if old.get("population_hash") != population_hash and self._nothing_committed():
                # A config fixed after its first runs failed: no run of the old population exists.
                self.manifest_path.unlink()
            elif old.get("population_hash") != population_hash:
                raise CollectError(
                    f"{self.root} holds collection {old.get('name')!r} of another population "
                    f"({len(old.get('runs', []))} runs, hash {old.get('population_hash')}; this config has "
                    f"{len(run_ids)} runs, hash {population_hash}). Choose another out_dir, or resume "
                    f"with the config that made it ({self.root / 'config.yaml'})."
                )
        with disk_full_is_fatal(self.root):
            prepare_run_dir(self.root, config)
            if not self.manifest_path.is_file():
                write_json_atomic(
                    self.manifest_path,
                    {
                        "schema_version": SCHEMA_VERSION,
                        "name": name,
                        "population_hash": population_hash,
                        "record": record,
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "runs": run_ids,
                    },
                )

    def _nothing_committed(self) -> bool:
        """No commit record exists and no session of any part holds its lock. (A session that
        prepared just before and has not taken its lock yet finds the new population under it.)"""
        if any((self.root / COMMITS_DIR).glob("*.json")):
            return False
        for path in sorted((self.root / _LOCKS_DIR).glob("*.lock")):
            if path.name == "prepare.lock":
                continue
            with open(path, "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
        return True

    def commit_records(self) -> list[dict[str, Any]]:
        """Every commit record of the folder, sorted by group ID."""
        paths = sorted((self.root / COMMITS_DIR).glob("*.json"))
        return [check_commit_record(_read_json(path), f"commit record {path}") for path in paths]

    def completed_runs(self) -> dict[str, dict[str, Any]]:
        """Run ID -> run record of every committed run."""
        return {run["run_id"]: run for record in self.commit_records() for run in record["runs"]}

    def clean(self, prefix: str | None) -> list[Path]:
        """Delete what crashed sessions of `prefix` (every prefix if None) left: temporary shards,
        shards no commit record references, spool files, temporary commit records (and, for every
        prefix, a temporary index). Returns what was deleted."""
        removed = []
        # A temporary commit record is `.<group_id>.json.<random>.tmp`, and group IDs start with the prefix.
        for path in sorted((self.root / COMMITS_DIR).glob(f".{prefix}-*.tmp" if prefix else ".*.tmp")):
            path.unlink(missing_ok=True)
            removed.append(path)
        if prefix is None:
            for path in _atomic_temps(self.root, INDEX_NAME):
                path.unlink(missing_ok=True)
                removed.append(path)
        referenced = {s["path"] for record in self.commit_records() for s in record["shards"]}
        for path in sorted((self.root / SHARDS_DIR).glob("*/*")):
            rel = path.relative_to(self.root).as_posix()
            if (prefix is None or path.name.startswith(f"{prefix}-")) and rel not in referenced:
                path.unlink()
                removed.append(path)
        if self.spool_dir.is_dir():
            for path in sorted(self.spool_dir.iterdir()):
                if prefix is None or path.name.startswith(f"{prefix}-"):
                    path.unlink()
                    removed.append(path)
        return removed

    @contextlib.contextmanager
    def lock(self, prefix: str) -> Iterator[None]:
        """Hold the session lock of `prefix`: a second session of the same part would clean up the
        first one's files. The kernel releases it when the process ends, however it ends."""
        try:
            with self._flock(self.root / _LOCKS_DIR / f"{prefix}.lock", blocking=False):
                yield
        except BlockingIOError as err:
            raise CollectError(
                f"another session (pid {err.filename or '?'}) is collecting part {prefix!r} into "
                f"{self.root}; wait for it to finish or stop it first"
            ) from None

    @staticmethod
    @contextlib.contextmanager
    def _flock(path: Path, *, blocking: bool) -> Iterator[None]:
        """Hold an exclusive lock on `path`, which then holds our pid; `BlockingIOError` (its
        `filename`: the holder's pid) if not `blocking` and another process holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError as err:
                f.seek(0)
                err.filename = f.read().strip()
                raise
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield

    def log(self, line: str) -> None:
        """Append a timestamped line to the folder's log (one line per run)."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with disk_full_is_fatal(self.root / LOG_NAME), open(self.root / LOG_NAME, "a") as f:
            f.write(f"{stamp} {line}\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CollectError(
            f"cannot read {path}: {err}; it was written atomically, so it was damaged later"
        ) from None
