"""Config of `weightcast train-predictor` (train_predictor stage): which collection to read, which
predictor kinds to fit per layer type, how windows are cut and batched, how runs are held out for
validation, and the training loop's settings. Loaded as defaults <- YAML <- `key.sub=value`.

    weightcast train-predictor --config configs/train_predictor/debug.yaml steps=50 \
        predictors=[wnn] predictor_kwargs.wnn.horizon=2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, get_args

from weightcast.collect.schema import RUN_STATUSES
from weightcast.zoo.config import ConfigError, load_config
from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.optim import OptimizerConfig, ScheduleConfig
from weightcast.zoo.tasks import Split
from weightcast.zoo.tracking import TrackingConfig

from weightcast.train_predictor.predictors import PREDICTORS

__all__ = ["GraphTrainingConfig", "TrainPredictorConfig", "VAL_BY", "load_train_predictor_config"]

ValBy = Literal["run", "task", "arch"]  # what is held out for validation
VAL_BY: tuple[str, ...] = get_args(ValBy)
# Choice fields typed `Literal[...]` are checked by OmegaConf when the config is loaded.
RunStatus = Literal[RUN_STATUSES]  # type: ignore[valid-type]


@dataclass
class GraphTrainingConfig:
    """How kinds with a graph network (`nino`, whose predictor has `graph_loss`) train: on
    whole-model samples of the runs (`train_predictor.graph_data`), one network for every layer type,
    as NiNo does; `enabled: false` trains them per layer type on scalar windows like the others."""

    enabled: bool = True
    batch_size: int = 4  # whole-model samples per step (replaces batch_size for these kinds)
    samples_per_run: int = 4  # samples drawn from one run per pass over the training runs
    runs_per_read: int = 8  # runs whose histories are in memory at once (within one shard group)
    val_samples_per_run: int = 2  # fixed validation samples per held-out run
    max_val_samples: int = 64  # at most this many validation samples (a seeded choice of runs)


@dataclass
class TrainPredictorConfig:
    """Config of `weightcast train-predictor`: fit one predictor per (kind, layer type) and export
    one bundle per kind to `<out_dir>/<kind>/`."""

    name: str = "debug"
    collection: str = "runs/collect/${name}"  # a collection folder, or a URL webdataset opens (http://...)
    out_dir: str = "runs/train_predictor/${name}"
    predictors: list[str] = field(default_factory=lambda: ["wnn", "lfd2"])  # PREDICTORS kinds: a bundle each
    # kind -> constructor keyword arguments (input_length, horizon, ...); a kind not listed uses its defaults
    predictor_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    layer_types: list[str] = field(default_factory=list)  # empty: every layer type of the collection
    split: Optional[Split] = "train"  # runs on tasks of this split (train | heldout); null: every run
    statuses: list[RunStatus] = field(default_factory=lambda: ["complete"])  # statuses read (add diverged)
    steps: int = 1000  # optimizer steps per (kind, layer type)
    batch_size: int = 256  # windows per step (per process under torchrun)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # Adam, lr 1e-3 by default
    # lr multiplier over the steps of each fit (a schedule's "epochs" are steps here)
    schedule: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(name="cosine"))
    windows_per_history: int = 64  # windows cut from one parameter's history per pass over the data
    shuffle_buffer: int = 16384  # windows held for shuffling (bounds the pipeline's memory)
    num_workers: int = 0  # DataLoader worker processes reading shards (0: in the training process)
    val_by: ValBy = "run"  # hold out whole runs (stratified by architecture), tasks or architectures
    val_fraction: float = 0.2  # fraction of runs / tasks / architectures held out
    val_holdout: list[str] = field(default_factory=list)  # explicit run IDs / tasks / architectures
    val_windows_per_history: int = 1024  # validation windows cut from one held-out history
    max_val_windows: int = 50000  # uniform sample of the held-out windows per layer type
    eval_every: int = 100  # steps between validations (and at the last step)
    checkpoint_every: int = 100  # steps between checkpoints (and at the last step)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<i> (under torchrun: cuda:<LOCAL_RANK>)
    progress: bool = True  # tqdm bars over steps
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # job_type=train-predictor
    graph: GraphTrainingConfig = field(default_factory=GraphTrainingConfig)  # `nino` on whole models

    def __post_init__(self) -> None:
        if not self.predictors:
            raise ConfigError("predictors is empty; name at least one kind, e.g. predictors=[wnn]")
        for kind in [*self.predictors, *self.predictor_kwargs]:
            PREDICTORS.check(kind)
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise ConfigError(f"layer_types has unknown types {unknown}; valid: {', '.join(LAYER_TYPES)}")
        if not self.statuses:
            raise ConfigError(f"statuses is empty; give a non-empty subset of {list(RUN_STATUSES)}")
        if not 0 < self.val_fraction < 1 and not self.val_holdout:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "windows_per_history": self.windows_per_history,
            "val_windows_per_history": self.val_windows_per_history,
            "max_val_windows": self.max_val_windows,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "graph.batch_size": self.graph.batch_size,
            "graph.samples_per_run": self.graph.samples_per_run,
            "graph.runs_per_read": self.graph.runs_per_read,
            "graph.val_samples_per_run": self.graph.val_samples_per_run,
            "graph.max_val_samples": self.graph.max_val_samples,
        }
        bad = {k: v for k, v in positive.items() if v < 1}
        if bad:
            raise ConfigError(f"{', '.join(bad)} must be >= 1, got {bad}")
        if self.shuffle_buffer < self.batch_size:
            raise ConfigError(
                f"shuffle_buffer ({self.shuffle_buffer}) must hold at least one batch "
                f"(batch_size {self.batch_size})"
            )
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")

    def kwargs_for(self, kind: str) -> dict[str, Any]:
        """Constructor keyword arguments of predictor `kind`."""
        return dict(self.predictor_kwargs.get(kind, {}))


def load_train_predictor_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> TrainPredictorConfig:
    """Defaults <- YAML file <- `key.sub=value` overrides."""
    return load_config(TrainPredictorConfig, path, overrides)
