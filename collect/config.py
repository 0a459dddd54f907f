"""Collection configs (collect): the population of runs a collection trains, how weights are
recorded, and how runs are executed. Expanding a population is deterministic: every run gets a
stable ID derived from its own resolved `TrainConfig`, so the same config always yields the same runs.

    config = load_collect_config("configs/collect/debug.yaml", ["engine.workers=2"])
    expansion = expand(config)          # expansion.runs: list[RunSpec], sorted by run ID
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

from weightcast.zoo.augment import augmentation_inputs
from weightcast.zoo.config import ConfigError, load_config
from weightcast.zoo.models import create_model, is_compatible
from weightcast.zoo.optim import OptimizerConfig, ScheduleConfig, build_optimizer, build_schedule
from weightcast.zoo.tasks import get_task
from weightcast.zoo.tracking import TrackingConfig
from weightcast.zoo.train import TrainConfig

from weightcast.collect.schema import DTYPES

__all__ = [
    "GroupConfig",
    "RecordConfig",
    "EngineConfig",
    "TrackingConfig",
    "CollectConfig",
    "RunSpec",
    "Expansion",
    "load_collect_config",
    "expand",
    "run_id",
    "train_config",
    "parse_size",
    "resolve_part",
]

MODES = ("grid", "random")


@dataclass
class GroupConfig:
    """One group of the population: lists of values, expanded as a grid (cartesian product) or
    sampled `num_runs` times (random mode, where `lr_range` gives a log-uniform lr range)."""

    arch: list[str] = field(default_factory=lambda: ["mlp"])
    arch_kwargs: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # each is one choice
    task: list[str] = field(default_factory=lambda: ["mnist1d"])
    optimizer: list[str] = field(default_factory=lambda: ["adam"])
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)  # other OptimizerConfig fields
    lr: list[float] = field(default_factory=lambda: [1e-3])
    lr_range: Optional[list[float]] = None  # random mode: [low, high], log-uniform; replaces lr
    schedule: list[str] = field(default_factory=lambda: ["constant"])
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)  # other ScheduleConfig fields
    batch_size: list[int] = field(default_factory=lambda: [128])
    augmentation: list[str] = field(default_factory=lambda: ["none"])
    init: list[str] = field(default_factory=lambda: ["default"])
    epochs: list[int] = field(default_factory=lambda: [10])
    seed: list[int] = field(default_factory=lambda: [0])
    mode: str = "grid"  # grid | random
    num_runs: int = 0  # random mode: number of draws


@dataclass
class RecordConfig:
    """What is recorded and how it is stored. `dtype` and `every_steps` are part of every run ID."""

    dtype: str = "fp32"  # fp32 | fp16 | bf16
    every_steps: int = 0  # also snapshot every N optimizer steps (0: at epoch ends only)
    shard_size: str = "256MB"  # a group is committed once one of its shards reaches this (B, KB, MB, GB)
    commit_every_s: float = 600.0  # ... or once it has been open this long (bounds the work a crash loses)
    spool_dir: Optional[str] = None  # local scratch for snapshots of running runs; default <out_dir>/spool


@dataclass
class EngineConfig:
    """Where runs execute. `local`: worker processes on this machine; `ray`: actors on a Ray cluster."""

    name: str = "local"  # local | ray (collect.engines.ENGINES)
    workers: int = 0  # 0: one per GPU, else 2 on a CPU with >= 2 cores (local); cluster CPUs / num_cpus (ray)
    # torch CPU threads per worker, the same on every engine so that they give the same runs bit for
    # bit (a run's last bits depend on it; each run record keeps it). 0: automatic, which differs
    # between engines (local: cores // workers; ray: num_cpus).
    threads_per_worker: int = 1
    address: Optional[str] = None  # ray: "auto" joins a running cluster; None starts a local instance
    num_cpus: float = 1.0  # ray: CPUs reserved per worker actor
    num_gpus: float = 0.0  # ray: GPU fraction per worker actor (0.25: four concurrent runs per GPU)
    # ray: seconds a worker actor may wait to be scheduled (cluster busy or short of a resource)
    schedule_timeout_s: float = 300.0
    # Runs that can share a batch train together, up to this many (collect.batched; zoo-cpu-10x uses
    # 32); 1: every run alone, bit for bit as `zoo.train.train` (a batched run equals it to float32
    # rounding); 0: 16 on a CPU, as many as memory holds on a GPU.
    group_size: int = 1


@dataclass
class CollectConfig:
    """Config of `weightcast collect`: a population of runs and where their histories go."""

    name: str = "debug"
    out_dir: str = "runs/collect/${name}"
    population: list[GroupConfig] = field(default_factory=lambda: [GroupConfig()])
    seed: int = 0  # seeds the random-mode draws (not the runs: each run has its own seed)
    data_dir: Optional[str] = None  # folder of the file-based tasks (mnist, cifar10, ...)
    device: str = "auto"
    record: RecordConfig = field(default_factory=RecordConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    part: str = ""  # "i/N": this job runs the runs whose index % N == i; default from SLURM array vars

    def __post_init__(self) -> None:
        _check_choice("record.dtype", self.record.dtype, tuple(DTYPES))
        parse_size(self.record.shard_size)
        if self.record.every_steps < 0:
            raise ConfigError(f"record.every_steps must be >= 0, got {self.record.every_steps}")
        if self.engine.workers < 0 or self.engine.threads_per_worker < 0 or self.engine.group_size < 0:
            raise ConfigError(
                "engine.workers, engine.threads_per_worker and engine.group_size must be >= 0 (0 = automatic)"
            )
        if not (self.record.commit_every_s > 0):
            raise ConfigError(f"record.commit_every_s must be > 0, got {self.record.commit_every_s}")
        if not (self.engine.num_cpus > 0 and self.engine.num_gpus >= 0):
            raise ConfigError(
                f"engine.num_cpus must be > 0 and engine.num_gpus >= 0, got {self.engine.num_cpus} and "
                f"{self.engine.num_gpus}"
            )
        if not self.population:
            raise ConfigError("population is empty; give at least one group of runs")
        if self.part:
            _parse_part(self.part)


@dataclass(frozen=True)
class RunSpec:
    """One run of the population: its ID, its resolved TrainConfig (as a plain dict) and its group."""

    run_id: str
    train: dict[str, Any]
    group: int


@dataclass
class Expansion:
    runs: list[RunSpec]  # sorted by run ID
    drawn: int  # combinations (grid) or draws (random) before skipping
    incompatible: dict[str, int]  # reason -> number of combinations skipped
    duplicates: int  # combinations that gave a run ID already present
    population_hash: str  # sha1 of the sorted run IDs: identifies the population

    def summary(self) -> str:
        skipped = sum(self.incompatible.values())
        lines = [
            f"population: {len(self.runs)} runs ({self.drawn} combinations drawn, "
            f"{skipped} incompatible skipped, {self.duplicates} duplicates collapsed)"
        ]
        lines += [f"  skipped {n} x {reason}" for reason, n in sorted(self.incompatible.items())]
        return "\n".join(lines)


def load_collect_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> CollectConfig:
    """Defaults <- YAML file <- `key.sub=value` overrides; unknown keys of a population group are
    named with the group's position."""
    if path is not None and Path(path).is_file():
        raw = yaml.safe_load(Path(path).read_text()) or {}
        valid = {f.name for f in fields(GroupConfig)}
        for i, group in enumerate(raw.get("population") or []):
            unknown = sorted(set(group or {}) - valid) if isinstance(group, dict) else []
            if unknown:
                raise ConfigError(
                    f"{path}: population[{i}] has unknown key(s) {unknown}; "
                    f"valid keys: {', '.join(sorted(valid))}"
                )
    return load_config(CollectConfig, path, overrides)  # `population.<i>.<key>=v` reaches into groups


def run_id(train: TrainConfig, record: RecordConfig) -> str:
    """Stable 12-hex ID of a run: sha1 of its resolved TrainConfig and recording settings.

    `device` and `data_dir` are left out: where a run executes or where its data files lie
    changes neither its weights nor its identity."""
    payload = {
        "train": {k: v for k, v in asdict(train).items() if k not in ("device", "data_dir")},
        "record": {"dtype": record.dtype, "every_steps": record.every_steps},
    }
    return hashlib.sha1(_canonical_json(payload).encode()).hexdigest()[:12]


def train_config(spec: RunSpec, device: str | None = None) -> TrainConfig:
    """The TrainConfig of a run spec (validated again by the dataclasses, as after a trip through JSON),
    on `device` when given (specs leave the device out: the zoo default otherwise)."""
    train = dict(spec.train)
    if device is not None:
        train["device"] = device
    train["optimizer"] = OptimizerConfig(**train["optimizer"])
    train["schedule"] = ScheduleConfig(**train["schedule"])
    return TrainConfig(**train)


def expand(config: CollectConfig) -> Expansion:
    """All runs of the population, sorted by run ID. Incompatible architecture/task or
    augmentation/task combinations are skipped and counted; duplicate run IDs collapse."""
    runs: dict[str, RunSpec] = {}
    incompatible: Counter[str] = Counter()
    drawn = duplicates = 0
    for index, group in enumerate(config.population):
        kwargs = _group_kwargs(group, index)
        for choice in _choices(group, index, config.seed):
            drawn += 1
            reason = _incompatibility(choice, config.data_dir)
            if reason:
                incompatible[reason] += 1
                continue
            train = _train_config(choice, kwargs, config, index)
            rid = run_id(train, config.record)
            if rid in runs:
                duplicates += 1
                continue
            runs[rid] = RunSpec(rid, asdict(train), index)
    if not runs:
        raise ConfigError(
            f"the population has no compatible run ({drawn} combinations, all skipped: {dict(incompatible)})"
        )
    ordered = [runs[k] for k in sorted(runs)]
    population_hash = hashlib.sha1(",".join(sorted(runs)).encode()).hexdigest()[:16]
    return Expansion(ordered, drawn, dict(incompatible), duplicates, population_hash)


def parse_size(size: str | int) -> int:
    """Bytes of a size like 1000, "64MB", "1.5GB" (powers of 1000) or "512KiB" (powers of 1024)."""
    match = _SIZE.fullmatch(str(size))
    if match:
        unit = (match.group(2) or " ").lower()
        value = float(match.group(1)) * (1024 if match.group(3) else 1000) ** " kmgt".index(unit)
        if value >= 1:
            return int(value)
    raise ConfigError(
        f"record.shard_size must be a positive size like 1000000, '64MB' or '1GiB', got {size!r}"
    )


def resolve_part(part: str, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(i, N) of a static partition `"i/N"`; when `part` is empty, from SLURM_ARRAY_TASK_ID /
    SLURM_ARRAY_TASK_COUNT (relative to SLURM_ARRAY_TASK_MIN) if set; else None (every run)."""
    if part:
        return _parse_part(part)
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        task_id = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return _parse_part(f"{task_id}/{env['SLURM_ARRAY_TASK_COUNT']}")
    return None


def _parse_part(part: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", part)
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"part must be 'i/N' with 0 <= i < N (e.g. part=0/4), got {part!r}")
    return int(match.group(1)), int(match.group(2))


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {value!r}")


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(?:([kmgt])(i)?)?b?\s*", re.IGNORECASE)

# The varying fields of a group, in the order they are crossed.
_AXES = (
    "arch", "arch_kwargs", "task", "optimizer", "lr", "schedule", "batch_size", "augmentation", "init",
    "epochs", "seed",
)  # fmt: skip


def _choices(group: GroupConfig, index: int, seed: int) -> list[dict[str, Any]]:
    """The group's combinations: the grid, or `num_runs` seeded draws."""
    where = f"population[{index}]"
    if group.mode not in MODES:
        raise ConfigError(f"{where}.mode must be one of {', '.join(MODES)}, got {group.mode!r}")
    for axis in _AXES:
        if axis == "lr" and group.lr_range is not None:
            continue
        if not getattr(group, axis):
            raise ConfigError(f"{where}.{axis} is empty; give at least one value")
    if group.mode == "grid":
        if group.num_runs or group.lr_range is not None:
            raise ConfigError(
                f"{where}: num_runs and lr_range apply to mode: random only (this group is a grid)"
            )
        return [dict(zip(_AXES, values)) for values in itertools.product(*(getattr(group, a) for a in _AXES))]
    if group.num_runs < 1:
        raise ConfigError(f"{where}: mode random needs num_runs >= 1, got {group.num_runs}")
    lr_range = group.lr_range
    if lr_range is not None and not (len(lr_range) == 2 and 0 < lr_range[0] <= lr_range[1]):
        raise ConfigError(f"{where}.lr_range must be [low, high] with 0 < low <= high, got {group.lr_range}")
    rng = np.random.default_rng([seed, index])  # the same draws for the same config, group by group
    draws = []
    for _ in range(group.num_runs):
        choice = {axis: _pick(rng, getattr(group, axis)) for axis in _AXES if axis != "lr"}
        if group.lr_range is not None:
            low, high = (math.log(v) for v in group.lr_range)
            choice["lr"] = float(f"{math.exp(rng.uniform(low, high)):.3g}")  # 3 digits: readable IDs
        else:
            choice["lr"] = _pick(rng, group.lr)
        draws.append(choice)
    return draws


def _pick(rng: np.random.Generator, values: list[Any]) -> Any:
    return values[int(rng.integers(len(values)))]


def _incompatibility(choice: dict[str, Any], data_dir: str | None) -> str | None:
    """Why a combination cannot run, or None. Builds (once per process) each task it names."""
    spec = get_task(choice["task"], data_dir).spec
    if not is_compatible(choice["arch"], spec):
        return f"architecture {choice['arch']} on task {choice['task']}"
    if spec.input_kind not in augmentation_inputs(choice["augmentation"]):
        return f"augmentation {choice['augmentation']} on task {choice['task']} ({spec.input_kind} inputs)"
    return None


def _group_kwargs(group: GroupConfig, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group's optimizer and schedule settings, validated and typed once (as the dataclasses'
    fields: an int weight decay becomes a float, so equal settings give equal run IDs)."""
    typed = []
    for cls, kwargs, key in ((OptimizerConfig, group.optimizer_kwargs, "optimizer_kwargs"),
                             (ScheduleConfig, group.schedule_kwargs, "schedule_kwargs")):
        unknown = sorted(set(kwargs) - {f.name for f in fields(cls)} | set(kwargs) & {"name", "lr"})
        if unknown:
            valid = [f.name for f in fields(cls) if f.name not in ("name", "lr")]
            raise ConfigError(f"population[{index}].{key} has unknown key(s) {unknown}; valid: {valid}")
        try:
            node = OmegaConf.merge(OmegaConf.structured(cls), kwargs)
        except Exception as err:  # omegaconf's validation errors
            raise ConfigError(f"population[{index}].{key}: {str(err).splitlines()[0]}") from None
        typed.append({k: v for k, v in OmegaConf.to_container(node).items() if k not in ("name", "lr")})
    return typed[0], typed[1]


def _train_config(
    choice: dict[str, Any], kwargs: tuple[dict[str, Any], dict[str, Any]], config: CollectConfig, index: int
) -> TrainConfig:
    optimizer_kwargs, schedule_kwargs = kwargs
    train = TrainConfig(
        arch=choice["arch"],
        arch_kwargs=dict(choice["arch_kwargs"]),
        task=choice["task"],
        data_dir=config.data_dir,
        optimizer=OptimizerConfig(name=choice["optimizer"], lr=float(choice["lr"]), **optimizer_kwargs),
        schedule=ScheduleConfig(name=choice["schedule"], **schedule_kwargs),
        augmentation=choice["augmentation"],
        init=choice["init"],
        batch_size=int(choice["batch_size"]),
        epochs=int(choice["epochs"]),
        seed=int(choice["seed"]),
        device=config.device,
    )
    _check_model(train, f"population[{index}]")
    _check_optimization(train, f"population[{index}]")
    return train


def _check_model(train: TrainConfig, where: str) -> None:
    """Build the model once per (arch, kwargs, task): bad arch_kwargs fail at expansion, not later."""
    key = (train.arch, _canonical_json(train.arch_kwargs), train.task, train.data_dir)
    if key in _CHECKED_MODELS:
        return
    try:
        create_model(train.arch, get_task(train.task, train.data_dir).spec, **train.arch_kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    _CHECKED_MODELS.add(key)


def _check_optimization(train: TrainConfig, where: str) -> None:
    """Build the run's optimizer and schedule on a stand-in parameter: torch's own checks (a
    negative lr, momentum or weight decay, betas outside [0, 1)) fail at expansion, before the
    collection folder is written, not in the first run."""
    lr = train.optimizer.lr
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{where}.lr must be a finite number > 0, got {lr}")
    param = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = build_optimizer([param], train.optimizer)
        schedule = build_schedule(optimizer, train.schedule, total_steps=train.epochs, steps_per_epoch=1)
        multipliers = [schedule.lr_lambdas[0](step) for step in range(train.epochs + 1)]
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ConfigError(
            f"{where}: optimizer {train.optimizer.name} / schedule {train.schedule.name}: {err}"
        ) from None
    bad = [m for m in multipliers if not (math.isfinite(m) and m >= 0)]
    if bad:
        raise ConfigError(
            f"{where}: schedule {train.schedule.name} gives lr multiplier {bad[0]} (must be >= 0)"
        )


_CHECKED_MODELS: set[tuple[str, str, str, str | None]] = set()
