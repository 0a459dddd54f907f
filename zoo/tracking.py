"""Experiment tracking, shared by every stage (zoo is the shared core): one `TrackingConfig` that
each stage's config holds as `tracking`, and `make_tracker`, which gives a `Tracker`.

`tracking.name=none` (the default) gives a `Tracker` whose calls do nothing, so a stage calls it
without asking whether tracking is on; `wandb` gives one wandb run (wandb is imported only then;
`WANDB_MODE=offline` works without an account, the files go under the run's `out_dir/wandb`).

    tracker = make_tracker(config.tracking, job_type="eval", name=config.name, out_dir=out, config=config)
    tracker.log({"loss": 0.1})
    tracker.finish()

One pipeline in one wandb group: every stage's run joins `tracking.group`, by default a name the
stage derives from the zoo collection it builds on (collect: its own name; train-predictor: its
collection's; eval: the collection its first bundle was trained on), so collect -> train-predictor
-> eval of one zoo share a group; `tracking.group=NAME` chooses one (the quick start sets
"quickstart").

Lineage: a stage logs what it makes as a wandb Artifact (`log_artifact`: collect the collection's
index, train-predictor each bundle) and declares what it reads (`use_artifact`: train-predictor the
collection, eval the bundles), so the lineage graph shows which zoo made which predictor and which
predictor made which result. Local folders are logged by reference (`file://` URIs, checksummed,
nothing copied): the same files give the same artifact digest in both stages, so they are one
artifact version. Offline (`WANDB_MODE=offline`), where wandb's `use_artifact` is refused, the used
artifact is recorded as logged-and-used (what `use_artifact` of a new artifact does online), so a
later `wandb sync` draws the same graph.

Failures: `make_tracker` checks at start that wandb can log (a login, or `WANDB_MODE=offline`) and
raises `TrackingError` saying what to do; once work is running, a tracker call that fails prints
one warning and tracking stops for that run: the stage's own results are never lost to the tracker.
wandb's banner and console capture are off (`silent`, `console="off"`), so it does not print into a
progress bar.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence, get_args

from weightcast.errors import WeightcastError
from weightcast.zoo.config import config_to_dict
from weightcast.zoo.train import Hook, TrainState

__all__ = [
    "TRACKERS", "TrackingConfig", "TrackingError", "Tracker", "WandbTracker", "make_tracker",
    "check_wandb_login", "artifact_name",
]

TrackerName = Literal["none", "wandb"]
TRACKERS: tuple[str, ...] = get_args(TrackerName)
_OFFLINE_MODES = ("offline", "dryrun", "disabled")


class TrackingError(WeightcastError):
    """The tracker cannot start (no wandb login, wandb not installed, wandb refused the run)."""


@dataclass
class TrackingConfig:
    """`tracking` of every stage's config; OmegaConf checks `name` against `TRACKERS`."""

    name: TrackerName = "none"  # none | wandb
    project: str = "weightcast"  # the wandb project
    # The wandb group that one pipeline's stages share; null: derived from the zoo collection's name.
    group: Optional[str] = None


class Tracker:
    """Tracks nothing (`tracking.name=none`); the interface every stage calls."""

    def log(self, row: Mapping[str, Any]) -> None:
        """One row of scalars (one wandb step)."""

    def define_step(self, prefix: str, step: str = "step") -> None:
        """Plot the keys `prefix/*` over their own step key `prefix/<step>`."""

    def table(self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """A table of `rows` (one value per column) under `key`."""

    def image(self, key: str, path: str | Path) -> None:
        """An image file (a plot) under `key`."""

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Final values of the run (its summary)."""

    def update_config(self, values: Mapping[str, Any]) -> None:
        """Add to the run's config (e.g. the Hub commit a bundle resolved to)."""

    def log_artifact(
        self, name: str, type: str, path: str | Path, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Log the file or folder `path` (or a URL) as an output Artifact `name` of type `type`, by
        reference."""

    def use_artifact(
        self, name: str, type: str, path: str | Path, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Declare the file or folder `path` (logged by an earlier stage as `name`) an input."""

    def epoch_hooks(self, prefix: str | None = None) -> list[Hook]:
        """Hooks for `zoo.train.train` that log every epoch of the run in training (keys under
        `prefix/`, plotted over `prefix/epoch`, when given)."""
        return []

    def finish(self) -> None:
        """End the run."""


def check_wandb_login() -> None:
    """Raise `TrackingError` unless wandb can log: `WANDB_MODE` offline or disabled, an API key in
    `WANDB_API_KEY`, or a login in ~/.netrc (`wandb login`). Makes no network call."""
    if os.environ.get("WANDB_MODE", "").lower() in _OFFLINE_MODES or _truthy("WANDB_OFFLINE") or _truthy(
        "WANDB_DISABLED"
    ):
        return
    if os.environ.get("WANDB_API_KEY"):
        return
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth

        if read_netrc_auth(host=host):
            return
    except Exception:  # an unreadable .netrc, or another wandb version's layout: wandb.init will tell
        return
    raise TrackingError(
        f"tracking.name=wandb but wandb has no login for {host}: run `wandb login` (or set WANDB_API_KEY), "
        "or log offline with WANDB_MODE=offline (sync later with `wandb sync`), or set tracking.name=none"
    )


def artifact_name(text: str) -> str:
    """`text` as a wandb artifact name (letters, digits, '-', '_', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120] or "artifact"


class WandbTracker(Tracker):
    """One wandb run (`wandb.init` with the stage's `job_type`, the run's `name`, the `group`, the
    resolved config). After a failed call it warns once and does nothing more."""

    def __init__(
        self, tracking: TrackingConfig, *, job_type: str, name: str, out_dir: str | Path, config: Any,
        group: str | None = None,
    ):
        try:
            import wandb  # optional at import time: only tracked runs need it
        except ImportError:
            raise TrackingError(
                "tracking.name=wandb needs wandb: pip install wandb, or set tracking.name=none"
            ) from None
        check_wandb_login()
        self._wandb = wandb
        self.failed = False
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=tracking.project, job_type=job_type, group=group, name=name, dir=str(out),
                config=config_to_dict(config), reinit="create_new",
                settings=wandb.Settings(silent=True, console="off"),
            )
        except Exception as err:
            raise TrackingError(
                f"wandb could not start the {job_type} run {name!r}: {err}; check `wandb login` or set "
                "WANDB_MODE=offline, or set tracking.name=none"
            ) from None
        self.offline = os.environ.get("WANDB_MODE", "").lower() in _OFFLINE_MODES or _truthy("WANDB_OFFLINE")

    def _call(self, what: str, call: Callable[[], Any]) -> None:
        if self.failed:
            return
        try:
            call()
        except Exception as err:
            self.failed = True
            print(
                f"warning: wandb tracking failed ({what}: {type(err).__name__}: {err}); tracking stops for "
                "this run, the results are unaffected",
                file=sys.stderr,
            )

    def log(self, row: Mapping[str, Any]) -> None:
        self._call("log", lambda: self.run.log({k: v for k, v in row.items() if v is not None}))

    def define_step(self, prefix: str, step: str = "step") -> None:
        metric = lambda: self.run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/{step}")  # noqa: E731
        self._call("define_metric", metric)

    def table(self, key: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        data = [list(row) for row in rows]
        self._call("table", lambda: self.run.log({key: self._wandb.Table(columns=list(columns), data=data)}))

    def image(self, key: str, path: str | Path) -> None:
        self._call("image", lambda: self.run.log({key: self._wandb.Image(str(path))}))

    def summarize(self, values: Mapping[str, Any]) -> None:
        self._call("summary", lambda: self.run.summary.update(dict(values)))

    def update_config(self, values: Mapping[str, Any]) -> None:
        self._call("config", lambda: self.run.config.update(dict(values), allow_val_change=True))

    def _artifact(self, name: str, type: str, path: str | Path, metadata: Mapping[str, Any] | None) -> Any:
        artifact = self._wandb.Artifact(artifact_name(name), type=type, metadata=dict(metadata or {}))
        if isinstance(path, str) and "://" in path:  # a URL (a Hub commit): referenced as is
            artifact.add_reference(path, name=name, checksum=False)
            return artifact
        root = Path(path).resolve()
        # a folder file by file: the same entries and digest as a folder reference, without wandb
        # printing "Generating checksum..." into a progress bar
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            entry = root.name if file == root else f"{root.name}/{file.relative_to(root).as_posix()}"
            artifact.add_reference(file.as_uri(), name=entry)
        return artifact

    def log_artifact(
        self, name: str, type: str, path: str | Path, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._call("log_artifact", lambda: self.run.log_artifact(self._artifact(name, type, path, metadata)))

    def use_artifact(
        self, name: str, type: str, path: str | Path, metadata: Mapping[str, Any] | None = None
    ) -> None:
        def use() -> None:
            artifact = self._artifact(name, type, path, metadata)
            if not self.offline:
                self.run.use_artifact(artifact)
            else:  # wandb refuses use_artifact offline; this is what it does online for a new artifact
                self.run._log_artifact(artifact, aliases=[], is_user_created=True, use_after_commit=True)

        self._call("use_artifact", use)

    def epoch_hooks(self, prefix: str | None = None) -> list[Hook]:
        if prefix is not None:
            self.define_step(prefix, "epoch")
        return [_EpochCurves(self, prefix)]

    def finish(self) -> None:
        if not self.failed:
            self._call("finish", self.run.finish)
        else:
            try:
                self.run.finish(exit_code=1)
            except Exception:
                pass


def make_tracker(
    tracking: TrackingConfig, *, job_type: str, name: str, out_dir: str | Path, config: Any,
    group: str | None = None,
) -> Tracker:
    """The tracker `tracking.name` names: a `WandbTracker` for `wandb`, else a `Tracker` that does
    nothing. `job_type` is the stage (collect, train-predictor, eval), `config` its resolved config,
    `group` the stage's default group (`tracking.group` wins). Raises `TrackingError` when wandb
    cannot log (see `check_wandb_login`): call it before the stage's work starts."""
    if tracking.name == "wandb":
        return WandbTracker(
            tracking, job_type=job_type, name=name, out_dir=out_dir, config=config,
            group=tracking.group or group,
        )
    return Tracker()


def _truthy(variable: str) -> bool:
    return os.environ.get(variable, "").lower() in ("1", "true", "yes")


class _EpochCurves(Hook):
    """Logs each epoch of the run in training (x axis: the tracker's step, or `prefix/epoch`)."""

    def __init__(self, tracker: Tracker, prefix: str | None = None):
        self.tracker = tracker
        self.prefix = f"{prefix}/" if prefix else ""

    def on_epoch_end(self, state: TrainState) -> None:
        r = state.history.records[-1]
        row = {
            "epoch": r.epoch,
            "train_loss": r.train_loss,
            "val_loss": r.val_loss,
            f"val_{state.history.metric_name}": r.val_metric,
            "lr": r.lr,
        }
        self.tracker.log({self.prefix + k: v for k, v in row.items()})
