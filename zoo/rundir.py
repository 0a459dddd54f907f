"""Self-describing run directories, shared by every stage: the resolved config, the package version
and git SHA, and metrics as JSON lines, so that a result can be reproduced from its folder alone."""

import json
import os
import platform
import subprocess
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

from weightcast.zoo.config import save_config

__all__ = ["package_version", "git_sha", "prepare_run_dir", "write_json_atomic", "write_jsonl"]


def package_version() -> str:
    try:
        return metadata.version("weightcast")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def git_sha() -> str | None:
    """The commit of the source tree the package runs from, if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def prepare_run_dir(out_dir: str | Path, config: Any) -> Path:
    """Create `out_dir` with `config.yaml` (the resolved config) and `meta.json` (versions, time)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    write_json_atomic(
        out / "meta.json",
        {
            "weightcast_version": package_version(),
            "git_sha": git_sha(),
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return out


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write JSON to a temporary file in the same folder (`.<name>.<random>.tmp`), then rename:
    readers never see half a file. The file's mode follows the umask."""
    path = Path(path)
    # Not mkstemp: it creates the file 0600 whatever the umask, and folders are shared between
    # accounts. O_EXCL with mode 0666 lets the umask decide, as for any other file.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    path = Path(path)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path
