"""Config of `weightcast eval` (eval stage, the last of zoo <- collect <- train_predictor <- eval):
the methods to compare (predictor bundles applied by `NowcastHook`, or rule-based predictors built
on the spot), the held-out collection for the forecast-error evaluation, and the held-out tasks,
seeds and target of the speed-up evaluation. Loaded as defaults <- YAML <- `key.sub=value`.

    weightcast eval --config configs/eval/debug.yaml speedup.seeds=[0] methods.wnn.bundle=path/to/wnn

Methods and tasks are mappings keyed by their names, so one entry is overridden on the command
line (`speedup.tasks.wine-mlp.epochs=20`). Plain training (no predictor) is always run as the
reference and is not listed.

The defaults are the evaluation protocol (`eval.speedup`): each task's learning rate is the best
of its `lr_grid` for plain training (`speedup.tune_lr`), used by every method; the headline target
is 99% of plain training's best (`speedup.fraction`), with 95% (`extra_fractions`) and the task's
`absolute_target` reported beside it; a task trains for `epochs`, or for `max_steps` optimizer
steps validated every `eval_every_steps` (step-based).

A method's predictor is either
- `bundle`: a bundle folder, a Hub repository id ("org/name"), or `shipped:<kind>`, a pretrained
  bundle installed with the package (`eval.runtime.SHIPPED_BUNDLES_DIR/<kind>`); or
- `predictor`: a rule-based predictor (`{kind: linear-fit, input_length: 5, horizon: 5}`), built
  into a bundle that serves every layer type; no training needed.
A bundle that cannot be had (missing folder, no shipped bundle, Hub unreachable) makes the method
unavailable: the report names it with the reason, or, with `require_bundles=true`, eval stops
with that reason before training anything.

Zero-shot is checked by code (`check_zero_shot`): a task of the `train` split, or one a bundle
was trained on (its `trained_on.tasks`), is refused unless `allow_seen=true`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from omegaconf import OmegaConf

from weightcast.errors import WeightcastError
from weightcast.eval.runtime import SHIPPED_PREFIX, NowcastConfig, open_bundle
from weightcast.eval.runtime.hook import DEFAULT_PROBE_SIZE
from weightcast.train_predictor.bundle import PredictorBundle, load_bundle
from weightcast.train_predictor.hub import HubError
from weightcast.train_predictor.predictors import PREDICTORS, build_predictor
from weightcast.zoo.config import ConfigError, load_config
from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.tasks import TASKS, Split
from weightcast.zoo.tracking import TrackingConfig
from weightcast.zoo.train import TrainConfig

__all__ = [
    "DEFAULT_LR_GRIDS",
    "EvalTask",
    "MethodConfig",
    "ForecastConfig",
    "SpeedupConfig",
    "EvalConfig",
    "BundleUnavailable",
    "load_eval_config",
    "open_method_bundle",
    "bundle_fingerprint",
    "check_zero_shot",
    "seen_tasks",
]


# The learning rates tried for plain training when a task gives no `lr_grid`: the optimizer's usual
# default and a half-decade on either side (SGD with momentum: 0.01 for most nets, 0.1 for ResNets).
DEFAULT_LR_GRIDS = {
    "adam": [3e-4, 1e-3, 3e-3],
    "adamw": [3e-4, 1e-3, 3e-3],
    "rmsprop": [3e-4, 1e-3, 3e-3],
    "sgd": [0.01, 0.03, 0.1],
}


@dataclass
class EvalTask(TrainConfig):
    """One held-out task of the speed-up evaluation: a full zoo `TrainConfig` (arch, task,
    optimizer, schedule, batch size, the budget: `epochs`, or `max_steps` with `eval_every_steps`
    for a step-based task, ...) whose `seed` and `device` are replaced by the eval config's
    `speedup.seeds` and `device`, and whose learning rate is tuned for plain training (`lr_grid`,
    with `speedup.tune_lr`; else `optimizer.lr`)."""

    # lrs tried for plain training, the best (by plain's best mean val metric) used by every method;
    # empty: DEFAULT_LR_GRIDS of the optimizer. Ignored with speedup.tune_lr=false (optimizer.lr is used).
    lr_grid: list[float] = field(default_factory=list)
    absolute_target: Optional[float] = None  # a fixed val metric to reach, reported beside the fractions
    # One nowcaster call = this many optimizer steps for methods with every_steps=0 (0: one per
    # epoch). Step-based tasks set it, so that a method's period and horizon count these calls.
    nowcast_every_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(not (lr > 0 and math.isfinite(lr)) for lr in self.lr_grid):
            raise ConfigError(f"lr_grid must hold learning rates > 0, got {list(self.lr_grid)}")
        if self.nowcast_every_steps < 0:
            raise ConfigError(
                f"nowcast_every_steps must be >= 0 (0: once per epoch), got {self.nowcast_every_steps}"
            )

    def lrs(self, tune: bool) -> list[float]:
        """The learning rates plain training tries, ascending: the grid when `tune`, else `optimizer.lr`."""
        if not tune:
            return [self.optimizer.lr]
        return sorted(set(self.lr_grid or DEFAULT_LR_GRIDS.get(self.optimizer.name, [self.optimizer.lr])))


@dataclass
class MethodConfig:
    """One method of the comparison: a predictor applied to training by `NowcastHook`."""

    bundle: Optional[str] = None  # folder, Hub id "org/name", or "shipped:<kind>"
    revision: Optional[str] = None  # of a Hub bundle: branch, tag or commit (default: main)
    predictor: Optional[dict[str, Any]] = None  # rule-based: {kind: ..., **constructor kwargs}
    nowcast: NowcastConfig = field(default_factory=NowcastConfig)  # mode, period, horizon, guard, ...
    every_steps: int = 0  # call the nowcaster every N optimizer steps (0: once per epoch)
    probe_size: int = DEFAULT_PROBE_SIZE  # training examples in the guard's probe batch

    def __post_init__(self) -> None:
        if (self.bundle is None) == (self.predictor is None):
            raise ConfigError(
                "a method gives exactly one of `bundle` (folder, Hub id or shipped:<kind>) and `predictor` "
                f"(a rule-based {{kind: ...}}); got bundle={self.bundle!r}, predictor={self.predictor!r}"
            )
        if self.revision is not None and (self.bundle is None or self.bundle.startswith(SHIPPED_PREFIX)):
            raise ConfigError(
                f"revision={self.revision!r} selects a commit of a Hub bundle (bundle: org/name); this "
                f"method's bundle is {self.source()!r}: drop the revision"
            )
        if self.predictor is not None:
            kind = self.predictor.get("kind")
            if kind is None:
                raise ConfigError(
                    f"predictor needs a `kind`, e.g. {{kind: linear-fit}}; got {self.predictor}"
                )
            PREDICTORS.check(kind)
            if PREDICTORS.get(kind).trainable:
                raise ConfigError(
                    f"predictor kind {kind!r} is trainable: give a trained bundle (`bundle: <folder>`) "
                    f"instead; rule-based kinds: {', '.join(_rule_based_kinds())}"
                )
        if self.every_steps < 0 or self.probe_size < 1:
            raise ConfigError(
                f"need every_steps >= 0 and probe_size >= 1; got {self.every_steps}, {self.probe_size}"
            )

    def source(self) -> str:
        """What the method's bundle is built from, for the report."""
        if self.bundle is not None:
            return self.bundle
        kwargs = ", ".join(f"{k}={v}" for k, v in self.predictor.items() if k != "kind")
        return f"rule-based {self.predictor['kind']}({kwargs})"


@dataclass
class ForecastConfig:
    """Forecast error of every method's bundle (and the baselines) on held-out histories."""

    collection: Optional[str] = None  # collection folder of held-out runs; null: skip this evaluation
    split: Optional[Split] = "heldout"  # runs of tasks of this split; null (needs allow_seen): every run
    horizons: list[int] = field(default_factory=list)  # empty: each bundle's own horizons
    baselines: list[str] = field(default_factory=lambda: ["no-jump", "linear-fit"])  # rule-based kinds
    max_histories: int = 0  # parameter histories read per layer type (0: all)

    def __post_init__(self) -> None:
        for kind in self.baselines:
            PREDICTORS.check(kind)
            if PREDICTORS.get(kind).trainable:
                raise ConfigError(
                    f"forecast.baselines are rule-based kinds ({', '.join(_rule_based_kinds())}), "
                    f"got {kind!r}"
                )
        if any(h < 1 for h in self.horizons) or self.max_histories < 0:
            raise ConfigError(
                f"need horizons >= 1 and max_histories >= 0; got {self.horizons}, {self.max_histories}"
            )


@dataclass
class SpeedupConfig:
    """Training speed-up on held-out tasks: every method and plain training, the same seeds."""

    enabled: bool = True
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # The headline target: best - (1 - fraction) * |best| of plain training's mean curve (99%).
    fraction: float = 0.99
    extra_fractions: list[float] = field(default_factory=lambda: [0.95])  # targets reported beside it
    tune_lr: bool = True  # pick each task's lr from its lr_grid by plain training's best (see EvalTask)
    # An lr chosen at the edge of its grid adds the next lr beyond that edge (at the grid's own
    # ratio) and is chosen again, up to this many times: a baseline tuned at the edge of a grid may
    # not be the best plain training can do.
    extend_lr_grid: int = 2
    quality_tolerance: float = 0.01  # a method's best must be within this (relative) of plain's best
    tasks: dict[str, EvalTask] = field(default_factory=dict)  # label -> task entry

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"speedup.seeds must be distinct and non-empty, got {self.seeds}")
        if self.extend_lr_grid < 0:
            raise ConfigError(f"speedup.extend_lr_grid must be >= 0, got {self.extend_lr_grid}")
        for fraction in (self.fraction, *self.extra_fractions):
            if not 0 < fraction <= 1:
                raise ConfigError(f"speedup.fraction and extra_fractions must be in (0, 1], got {fraction}")
        if self.quality_tolerance < 0:
            raise ConfigError(f"speedup.quality_tolerance must be >= 0, got {self.quality_tolerance}")


@dataclass
class EvalConfig:
    """Config of `weightcast eval`: writes a report folder `out_dir` (see `eval.report`)."""

    name: str = "debug"
    out_dir: str = "runs/eval/${name}"
    allow_seen: bool = False  # evaluate on training-split tasks / tasks a bundle was trained on
    require_bundles: bool = False  # an unavailable bundle stops eval instead of being reported
    device: str = "auto"  # auto | cpu | cuda | cuda:N, for every training run
    threads: int = 0  # torch CPU threads during eval (0: torch's default)
    progress: bool = True  # a progress bar over the speed-up runs, with the time left
    methods: dict[str, MethodConfig] = field(default_factory=dict)  # name -> method
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    speedup: SpeedupConfig = field(default_factory=SpeedupConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # job_type=eval

    def __post_init__(self) -> None:
        if "plain" in self.methods:
            raise ConfigError("'plain' is the reference (training without a predictor), always run; "
                              "give the method another name")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.forecast.split != "heldout" and self.forecast.collection and not self.allow_seen:
            raise ConfigError(
                f"forecast.split={self.forecast.split!r} reads runs of training-split tasks; zero-shot "
                "evaluation reads held-out runs only (forecast.split=heldout), or set allow_seen=true"
            )
        if self.speedup.enabled and not self.speedup.tasks:
            raise ConfigError("speedup.tasks is empty; add a task entry (label: {task: ..., arch: ...}) "
                              "or set speedup.enabled=false")
        if not (self.forecast.collection or self.speedup.enabled):
            raise ConfigError("nothing to evaluate: set forecast.collection and/or speedup.enabled=true")

    def train_config(self, label: str, seed: int, lr: Optional[float] = None) -> TrainConfig:
        """The zoo `TrainConfig` of task entry `label` for `seed`, with learning rate `lr` (default:
        the entry's `optimizer.lr`)."""
        entry = asdict(self.speedup.tasks[label])
        for name in ("lr_grid", "absolute_target", "nowcast_every_steps"):
            del entry[name]
        if lr is not None:
            entry["optimizer"]["lr"] = lr
        return _typed(TrainConfig, {**entry, "seed": seed, "device": self.device})


class BundleUnavailable(WeightcastError, LookupError):
    """A method's bundle cannot be had here (missing folder, no shipped bundle, Hub unreachable)."""


def load_eval_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> EvalConfig:
    """Defaults <- YAML file <- `key.sub=value` overrides."""
    return load_config(EvalConfig, path, overrides)


def open_method_bundle(method: MethodConfig) -> PredictorBundle:
    """The method's bundle: loaded (folder, Hub, shipped) or built from its rule-based predictor.
    Raises `BundleUnavailable` with the reason when it cannot be had."""
    if method.predictor is not None:
        kwargs = {k: v for k, v in method.predictor.items() if k != "kind"}
        predictor = build_predictor(method.predictor["kind"], **kwargs)
        return PredictorBundle.from_predictors(
            {t: predictor for t in LAYER_TYPES},
            trained_on={"collection": "none (rule-based, not trained)"},
        )
    source = method.bundle
    if source.startswith(SHIPPED_PREFIX):
        try:
            return open_bundle(source)
        except FileNotFoundError as err:
            raise BundleUnavailable(str(err)) from None
    if Path(source).is_dir():
        return load_bundle(source, method.revision)  # a revision with a folder: ConfigError
    if _looks_like_path(source):
        raise BundleUnavailable(
            f"bundle folder {source!r} does not exist; make it with `weightcast train-predictor` "
            "(its <out_dir>/<kind>), or point the method at another folder"
        )
    try:
        return load_bundle(source, method.revision)
    except HubError as err:
        raise BundleUnavailable(str(err)) from None


def bundle_fingerprint(bundle: PredictorBundle) -> str:
    """16 hex digits identifying a bundle's config and weights (a retrained bundle in the same
    folder gets a new one, so resumed evaluations do not mix its results with the old one's)."""
    digest = hashlib.sha1(json.dumps(bundle.config, sort_keys=True).encode())
    for name, tensor in sorted(bundle.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def seen_tasks(bundle: PredictorBundle) -> set[str]:
    """Tasks the bundle's training collection held (from `trained_on`; empty when not recorded)."""
    return set(bundle.trained_on.get("tasks", []) or [])


def check_zero_shot(
    tasks: dict[str, str], bundles: dict[str, PredictorBundle], allow_seen: bool, where: str
) -> list[str]:
    """Refuse (ConfigError) training-split tasks and tasks a bundle was trained on, unless
    `allow_seen`; then return one note per seen (task, bundle) pair for the report.
    `tasks`: label -> task name; `bundles`: method -> bundle; `where`: the evaluation's name."""
    notes = []
    heldout = [n for n in TASKS if TASKS.metadata(n)["split"] == "heldout"]
    for label, task in tasks.items():
        if TASKS.metadata(task)["split"] == "train":
            message = (
                f"{where}: {label!r} uses task {task!r}, a training-split task (split=train); zero-shot "
                f"evaluation runs on held-out tasks ({', '.join(heldout)}) or your own registered with "
                "split='heldout'; set allow_seen=true to evaluate on it anyway"
            )
            if not allow_seen:
                raise ConfigError(message)
            notes.append(f"{label!r}: task {task!r} is a training-split task (allow_seen=true)")
        for method, bundle in bundles.items():
            if task in seen_tasks(bundle):
                collection = bundle.trained_on.get("collection", "?")
                if not allow_seen:
                    raise ConfigError(
                        f"{where}: {label!r} uses task {task!r}, which the bundle of method {method!r} was "
                        f"trained on (collection {collection!r}); not zero-shot: remove one of them or set "
                        "allow_seen=true"
                    )
                notes.append(f"{label!r}: method {method!r} was trained on task {task!r} (allow_seen=true)")
    return notes


def _rule_based_kinds() -> list[str]:
    return [k for k in PREDICTORS if not PREDICTORS.get(k).trainable]


def _looks_like_path(source: str) -> bool:
    """A local path rather than a Hub id ("org/name"): absolute, relative with ./ or ../, or deeper."""
    return source.startswith((".", "/", "~")) or source.count("/") != 1 or "\\" in source


def _typed(cls: type, values: dict[str, Any]) -> Any:
    """`cls` rebuilt from a plain dict through OmegaConf (nested dataclasses typed, validated)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
