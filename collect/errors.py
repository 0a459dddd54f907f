"""Errors of the collect stage, and the one place where a full disk becomes a clear message."""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Iterator

from weightcast.errors import WeightcastError

__all__ = ["CollectError", "CorruptShardError", "disk_full_is_fatal"]


class CollectError(WeightcastError, RuntimeError):
    """A collection cannot go on (a run failed, the disk is full, the folder holds another collection);
    the message says what to do."""


class CorruptShardError(CollectError):
    """A shard is truncated or unreadable; `shard` names it. Given one argument, it is the whole
    message (torch's DataLoader re-raises a worker's error as `type(err)(message)`)."""

    def __init__(self, shard: str, reason: str | None = None):
        super().__init__(shard if reason is None else f"corrupt shard {shard}: {reason}")
        self.shard = shard


@contextlib.contextmanager
def disk_full_is_fatal(path: str | Path) -> Iterator[None]:
    """Turn ENOSPC while writing `path` into a `CollectError` that says how to resume."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise CollectError(
            f"disk full while writing {path}; runs not yet committed stay incomplete (their files are "
            f"temporary and are deleted on the next start). Free space and run the same command again "
            f"to resume."
        ) from err
