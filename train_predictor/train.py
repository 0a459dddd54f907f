"""`weightcast train-predictor` (train_predictor stage): fit one predictor per (kind, layer type) on
a collection's shards and export one `PredictorBundle` per kind, with the validation errors of the
no-jump and linear-fit baselines on the same held-out windows beside its own.

    open the collection -> select runs (split, status) -> hold out runs for validation
    for each kind, for each layer type: cut the validation windows once -> fit (data.train_batches,
        fit.fit; rule-based kinds skip fitting) -> validate it and the baselines
    -> <out_dir>/<kind>/ (bundle), validation.json, metrics.jsonl, checkpoints/, config.yaml, meta.json

Under torchrun every rank runs this; the fits are data-parallel, and rank 0 alone validates, writes
and prints. A layer type without training windows gets no predictor: the bundle's fallback serves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from weightcast.zoo.config import ConfigError, config_to_dict
from weightcast.zoo.layer_types import LAYER_TYPES
from weightcast.zoo.rundir import prepare_run_dir, write_json_atomic
from weightcast.zoo.tracking import make_tracker
from weightcast.collect.schema import INDEX_NAME
from weightcast.collect.tracking import collection_artifact
from weightcast.zoo.train import resolve_device

from weightcast.train_predictor.bundle import PredictorBundle, bundle_artifact, save_bundle
from weightcast.train_predictor.config import TrainPredictorConfig
from weightcast.train_predictor.data import (
    CollectionSource,
    Windows,
    WindowSpec,
    open_collection,
    select_runs,
    split_runs,
    train_batches,
    validation_windows,
)
from weightcast.train_predictor.fit import FitResult, FitSettings, NoTrainingData, evaluate, fit
from weightcast.train_predictor.graph_data import (
    evaluate_graphs,
    graph_batch_loss,
    graph_batches,
    graph_validation_loss,
    graph_validation_samples,
)
from weightcast.train_predictor.predictors import Predictor, build_predictor

__all__ = [
    "TrainResult",
    "BASELINES",
    "train_predictors",
    "validation_table",
    "held_out_runs",
    "layer_types_to_fit",
    "validation_set",
]

BASELINES = ("no-jump", "linear-fit")  # evaluated on every validation set, beside the fitted kind
VALIDATION_FILE = "validation.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"


@dataclass
class TrainResult:
    out_dir: Path
    bundles: dict[str, Path]  # kind -> bundle folder (written by rank 0; empty on other ranks)
    # kind -> layer type -> {"windows", "best_step", "methods": {method: {"mae", "mse"[, "loss"]}}}
    validation: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> layer type -> why


def train_predictors(
    config: TrainPredictorConfig, *, command: str | None = None, echo: Callable[[str], None] = print
) -> TrainResult:
    """Fit and export the bundles of `config` (see the module docstring); resumable after a kill.
    `command` is recorded in the bundles (default: the command that replays `<out_dir>/config.yaml`)."""
    context = _Distributed.start(config.device)
    try:
        return _Run(config, context, command, echo if context.rank == 0 else _silent).run()
    finally:
        context.close()


def validation_table(result: TrainResult) -> str:
    """Validation MAE per (kind, layer type) beside the baselines', and the ratio to no-jump."""
    header = (
        f"{'kind':<12} {'layer type':<10} {'windows':>8} {'MAE':>10} {'no-jump':>10} {'linear-fit':>10} "
        f"{'/no-jump':>9}"
    )
    lines = ["validation MAE at the main horizon (raw weight units, held-out runs; lower is better)", header]
    for kind, rows in result.validation.items():
        for layer_type, row in rows.items():
            methods = row["methods"]
            own = methods[kind]["mae"]
            cells = [_fmt(methods.get(m, {}).get("mae")) for m in BASELINES]
            ratio = own / methods["no-jump"]["mae"] if methods["no-jump"]["mae"] > 0 else float("nan")
            lines.append(
                f"{kind:<12} {layer_type:<10} {row['windows']:>8} {_fmt(own)} {cells[0]} {cells[1]} "
                f"{ratio:>8.3f}x"
            )
    for kind, rows in result.skipped.items():
        for layer_type, why in rows.items():
            lines.append(f"{kind:<12} {layer_type:<10} no predictor ({why}); the bundle's fallback serves it")
    return "\n".join(lines)


def held_out_runs(
    config: TrainPredictorConfig, source: CollectionSource
) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    """The run records `config` selects from `source` (split, statuses) and their (training,
    validation) run IDs: whole runs held out by `config.val_by`, drawn with `config.seed`."""
    runs = select_runs(source, split=config.split, statuses=config.statuses)
    train_ids, val_ids = split_runs(
        runs, by=config.val_by, fraction=config.val_fraction, holdout=config.val_holdout, seed=config.seed
    )
    return runs, train_ids, val_ids


def layer_types_to_fit(config: TrainPredictorConfig, source: CollectionSource) -> list[str]:
    """`config.layer_types` (all those with histories in `source` when empty), in `LAYER_TYPES` order."""
    present = [t for t in LAYER_TYPES if source.index["layer_types"].get(t, {}).get("trajectories")]
    if not config.layer_types:
        return present
    absent = [t for t in config.layer_types if t not in present]
    if absent:
        raise ConfigError(
            f"layer type(s) {absent} have no histories in collection {source.name!r}; "
            f"it has {', '.join(present)} (leave layer_types empty to fit all of them)"
        )
    return [t for t in LAYER_TYPES if t in config.layer_types]


def validation_set(
    config: TrainPredictorConfig,
    source: CollectionSource,
    layer_type: str,
    val_ids: set[str],
    spec: WindowSpec,
) -> tuple[Windows, dict[str, dict[str, float]]]:
    """The fixed held-out windows of one layer type and geometry, cut as `config` says
    (`val_windows_per_history`, `max_val_windows`, `seed`), and the errors of `BASELINES` on them
    at the main horizon `max(spec.horizons)` (none when there is no window)."""
    windows = validation_windows(
        source, layer_type, val_ids, spec,
        windows_per_history=config.val_windows_per_history, max_windows=config.max_val_windows,
        seed=config.seed,
    )
    baselines = {}
    if len(windows):
        horizon = max(spec.horizons)
        for name in BASELINES:
            try:
                baseline = build_predictor(name, input_length=spec.input_length, horizon=horizon)
            except ConfigError:  # linear-fit needs two inputs
                continue
            baselines[name] = evaluate(baseline, windows, horizons=spec.horizons)
    return windows, baselines


class _Run:
    """One invocation: the collection, the held-out runs, and the loop over kinds and layer types."""

    def __init__(
        self, config: TrainPredictorConfig, context: _Distributed, command: str | None,
        echo: Callable[[str], None],
    ):
        self.config, self.context, self.echo = config, context, echo
        self.out = Path(config.out_dir)
        self.command = command or f"weightcast train-predictor --config {self.out / 'config.yaml'}"
        self.source: CollectionSource = open_collection(config.collection)
        runs, self.train_ids, self.val_ids = held_out_runs(config, self.source)
        self.train_runs = [r for r in runs if r["run_id"] in self.train_ids]
        self.layer_types = layer_types_to_fit(config, self.source)
        # Built now, so that bad predictor_kwargs fail before any data is read.
        self.templates = {k: build_predictor(k, **config.kwargs_for(k)) for k in config.predictors}
        self.val_cache: dict[tuple[str, WindowSpec], tuple[Windows, dict[str, dict[str, float]]]] = {}

    def run(self) -> TrainResult:
        result = TrainResult(self.out, {})
        tracker = _Tracker(self.config, self.out, self.source) if self.context.rank == 0 else None
        processes = f"; {self.context.world} processes" if self.context.world > 1 else ""
        self.echo(
            f"collection {self.source.name!r}: {len(self.train_ids)} training runs, {len(self.val_ids)} "
            f"validation runs (held out by {self.config.val_by}); layer types {', '.join(self.layer_types)}; "
            f"kinds {', '.join(self.templates)}{processes}"
        )
        try:
            for kind, template in self.templates.items():
                fitted = self._fit_kind(kind, template, result, tracker)
                if self.context.rank == 0:
                    result.bundles[kind] = self._export(kind, fitted, result)
                    tracker.bundle(kind, result.bundles[kind])
                    self.echo(f"{kind}: bundle {result.bundles[kind]}")
            if self.context.rank == 0:
                write_json_atomic(
                    self.out / VALIDATION_FILE, {"validation": result.validation, "skipped": result.skipped}
                )
                self.echo(validation_table(result))
                tracker.summary(result)
        finally:
            if tracker is not None:
                tracker.close()
        return result

    def _fit_kind(
        self, kind: str, template: Predictor, result: TrainResult, tracker: _Tracker | None
    ) -> dict[str, Predictor]:
        if self.config.graph.enabled and hasattr(template, "graph_loss"):
            return self._fit_graph_kind(kind, template, result, tracker)
        spec = WindowSpec.of(template)
        fitted: dict[str, Predictor] = {}
        for layer_type in self.layer_types:
            validation, baselines = self._validation(layer_type, spec)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed)  # the same initial weights on every rank and resume
                predictor = build_predictor(kind, **template.config)
            best_step = None  # rule-based kinds are not fitted
            if predictor.trainable:
                try:
                    outcome = self._fit(kind, layer_type, predictor, spec, validation, tracker)
                except NoTrainingData:
                    result.skipped.setdefault(kind, {})[layer_type] = (
                        f"no training windows of {spec.span} snapshots in the training runs"
                    )
                    continue
                predictor, best_step = outcome.predictor, outcome.best_step
            fitted[layer_type] = predictor
            if self.context.rank != 0:
                continue
            if not len(validation):
                self.echo(f"{kind}/{layer_type}: not validated (no validation history is long enough)")
            else:
                result.validation.setdefault(kind, {})[layer_type] = {
                    "windows": len(validation),
                    "input_length": spec.input_length,
                    "horizon": predictor.horizon,
                    "best_step": best_step,
                    "methods": {kind: evaluate(predictor, validation), **baselines},
                }
        if not fitted:
            snapshots = sorted({r["snapshots"] for r in self.train_runs})
            raise ConfigError(
                f"predictor {kind!r} has no training windows for any layer type: a window needs "
                f"input_length + max horizon = {spec.span} snapshots, the training runs have {snapshots}; "
                f"shorten the window (predictor_kwargs.{kind}) or collect longer runs"
            )
        return fitted

    def _fit(
        self, kind: str, layer_type: str, predictor: Predictor, spec: WindowSpec, validation: Windows,
        tracker: _Tracker | None,
    ) -> FitResult:
        config = self.config
        stream = zlib.crc32(f"{kind}/{layer_type}".encode())  # each fit its own random stream

        def make_batches(start: int):
            return train_batches(
                self.source, layer_type, self.train_ids, spec,
                batch_size=config.batch_size, windows_per_history=config.windows_per_history,
                shuffle_buffer=config.shuffle_buffer, num_batches=config.steps - start,
                seed=(config.seed, stream, start), num_workers=config.num_workers,
            )

        settings = FitSettings(
            steps=config.steps, optimizer=config.optimizer, schedule=config.schedule,
            eval_every=config.eval_every, checkpoint_every=config.checkpoint_every,
            device=self.context.device,
            progress=config.progress, desc=f"{kind}/{layer_type}",
        )
        fingerprint = {
            "kind": kind,
            "layer_type": layer_type,
            "predictor": predictor.config,
            "population_hash": self.source.index["population_hash"],
            "validation_runs": hashlib.sha1(",".join(sorted(self.val_ids)).encode()).hexdigest()[:16],
        }
        log = (lambda row: tracker.log(kind, layer_type, row)) if tracker is not None else None
        outcome = fit(
            predictor, make_batches, validation if len(validation) else None, settings,
            self.out / CHECKPOINTS_DIR / kind / layer_type, fingerprint=fingerprint, log=log,
        )
        if outcome.start_step:
            self.echo(f"{kind}/{layer_type}: resumed from the checkpoint at step {outcome.start_step}")
        return outcome

    def _fit_graph_kind(
        self, kind: str, template: Predictor, result: TrainResult, tracker: _Tracker | None
    ) -> dict[str, Predictor]:
        """A graph network (`nino`): ONE fit on whole-model samples of the training runs, validated
        on whole-model samples of the held-out runs (its graph path against the baselines per
        layer type), then one copy per layer type, configured with that type, for the bundle."""
        config, graph = self.config, self.config.graph
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # the same initial weights on every rank and resume
            predictor = build_predictor(kind, **template.config)
        validation = []
        if self.context.rank == 0:
            validation = graph_validation_samples(
                self.source, self.val_ids, predictor, samples_per_run=graph.val_samples_per_run,
                max_samples=graph.max_val_samples, seed=config.seed,
            )  # fmt: skip

        def make_batches(start: int):
            return graph_batches(
                self.source, self.train_ids, predictor, batch_size=graph.batch_size,
                samples_per_run=graph.samples_per_run, num_batches=config.steps - start,
                runs_per_read=graph.runs_per_read, seed=(config.seed, zlib.crc32(kind.encode()), start),
            )  # fmt: skip

        settings = FitSettings(
            steps=config.steps, optimizer=config.optimizer, schedule=config.schedule,
            eval_every=config.eval_every, checkpoint_every=config.checkpoint_every,
            device=self.context.device, progress=config.progress, desc=f"{kind}/graph",
        )  # fmt: skip
        fingerprint = {
            "kind": kind,
            "layer_type": "graph",
            "predictor": predictor.config,
            "population_hash": self.source.index["population_hash"],
            "validation_runs": hashlib.sha1(",".join(sorted(self.val_ids)).encode()).hexdigest()[:16],
        }
        log = (lambda row: tracker.log(kind, "graph", row)) if tracker is not None else None
        try:
            outcome = fit(
                predictor, make_batches, validation or None, settings,
                self.out / CHECKPOINTS_DIR / kind / "graph", fingerprint=fingerprint, log=log,
                loss=graph_batch_loss, evaluate_fn=graph_validation_loss,
            )  # fmt: skip
        except NoTrainingData:
            snapshots = sorted({r["snapshots"] for r in self.train_runs})
            raise ConfigError(
                f"predictor {kind!r} has no whole-model training sample: a sample needs input_length + "
                f"horizon = {predictor.input_length + predictor.horizon} snapshots, the training runs have "
                f"{snapshots}; shorten the window (predictor_kwargs.{kind}) or collect longer runs"
            ) from None
        if outcome.start_step:
            self.echo(f"{kind}/graph: resumed from the checkpoint at step {outcome.start_step}")
        trained = outcome.predictor
        fitted = {}
        for layer_type in self.layer_types:
            fitted[layer_type] = build_predictor(kind, **{**trained.config, "layer_type": layer_type})
            fitted[layer_type].load_state_dict(trained.state_dict())
        if self.context.rank == 0 and validation:
            baselines = {}
            for name in BASELINES:
                try:
                    baselines[name] = build_predictor(
                        name, input_length=trained.input_length, horizon=trained.horizon
                    )
                except ConfigError:  # linear-fit needs two inputs
                    continue
            errors = evaluate_graphs(trained, validation, baselines)
            for layer_type in self.layer_types:
                row = errors["layer_types"].get(layer_type)
                if row is None:
                    continue
                result.validation.setdefault(kind, {})[layer_type] = {
                    "windows": row["windows"],
                    "input_length": trained.input_length,
                    "horizon": trained.horizon,
                    "best_step": outcome.best_step,
                    "methods": row["methods"],
                }
        elif self.context.rank == 0:
            self.echo(f"{kind}/graph: not validated (no held-out run is long enough)")
        return fitted

    def _validation(self, layer_type: str, spec: WindowSpec) -> tuple[Windows, dict[str, dict[str, float]]]:
        """The held-out windows of one layer type and geometry (cut once, rank 0 only) and the
        baselines' errors on them."""
        if self.context.rank != 0:
            return Windows.empty(spec), {}
        key = (layer_type, spec)
        if key not in self.val_cache:
            self.val_cache[key] = validation_set(self.config, self.source, layer_type, self.val_ids, spec)
        return self.val_cache[key]

    def _export(self, kind: str, fitted: dict[str, Predictor], result: TrainResult) -> Path:
        rows = result.validation.get(kind, {})
        validation = {t: {m: v["mae"] for m, v in row["methods"].items()} for t, row in rows.items()}
        bundle = PredictorBundle.from_predictors(
            fitted,
            trained_on=self._trained_on(list(fitted)),
            validation=validation,
            commands=[self._collect_command(), self.command],
        )
        return save_bundle(bundle, self.out / kind)

    def _collect_command(self) -> str:
        """The command that replays the collection: a collection folder keeps its resolved config."""
        return f"weightcast collect --config {self.config.collection.rstrip('/')}/config.yaml"

    def _trained_on(self, layer_types: list[str]) -> dict[str, Any]:
        runs = self.train_runs
        return {
            "collection": self.source.name,
            "trajectories": self.source.trajectories(self.train_ids, layer_types),
            "architectures": sorted({r["arch"] for r in runs}),
            "tasks": sorted({r["task"] for r in runs}),
            "optimizers": sorted({r["optimizer"] for r in runs}),
            "runs": len(runs),
            "population_hash": self.source.index["population_hash"],
            "validation": f"{len(self.val_ids)} runs held out by {self.config.val_by}; errors are MAE",
            # the resolved configs that made it, embedded for the model card (no local path to follow)
            "configs": {"collect": self._collect_config(), "train_predictor": config_to_dict(self.config)},
        }

    def _collect_config(self) -> dict[str, Any] | None:
        """The collection's resolved config (its folder's config.yaml); None for a URL."""
        path = Path(self.config.collection) / "config.yaml"
        if not path.is_file():
            return None
        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)



@dataclass
class _Distributed:
    """This process's place under torchrun (rank 0 of 1 without it) and its device."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool

    @classmethod
    def start(cls, device_name: str) -> _Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = _device(device_name, local_rank if world > 1 else None)
        if world == 1 or dist.is_initialized():
            rank = dist.get_rank() if dist.is_initialized() else 0
            return cls(rank, world, device, owns_group=False)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), device, owns_group=True)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _device(name: str, local_rank: int | None) -> torch.device:
    """The zoo's device resolution; under torchrun a bare `cuda` is this process's GPU."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank or 0)
    return device


class _Tracker:
    """metrics.jsonl in the run folder (one row per validation), and the curves per kind and layer
    type on the `tracking` tracker (wandb with `tracking.name=wandb`)."""

    def __init__(self, config: TrainPredictorConfig, out: Path, source: CollectionSource):
        prepare_run_dir(out, config)
        self.name = config.name
        self.tracker = make_tracker(  # first: a missing wandb login stops train-predictor before any work
            config.tracking, job_type="train-predictor", name=config.name, out_dir=out, config=config,
            group=source.name,
        )
        self.file = open(out / METRICS_FILE, "a")  # appended to on resume
        self.defined: set[str] = set()
        index = Path(source.location) / INDEX_NAME
        if index.is_file():  # lineage: the collection's index, as collect logged it (a URL: not tracked)
            self.tracker.use_artifact(collection_artifact(source.name), "collection", index)

    def bundle(self, kind: str, folder: Path) -> None:
        """Log the bundle folder of `kind` as the Artifact `bundle-<name>-<kind>` (eval uses it)."""
        self.tracker.log_artifact(
            bundle_artifact(folder), "predictor-bundle", folder, metadata={"kind": kind, "run": self.name}
        )

    def log(self, kind: str, layer_type: str, row: dict[str, Any]) -> None:
        self.file.write(json.dumps({"kind": kind, "layer_type": layer_type, **row}) + "\n")
        self.file.flush()
        prefix = f"{kind}/{layer_type}"
        if prefix not in self.defined:  # each fit's curves over its own step axis
            self.tracker.define_step(prefix)
            self.defined.add(prefix)
        self.tracker.log({f"{prefix}/{k}": v for k, v in row.items()})

    def summary(self, result: TrainResult) -> None:
        columns = ["kind", "layer_type", "windows", "method", "mae", "mse"]
        data = [
            [kind, layer_type, row["windows"], method, m["mae"], m["mse"]]
            for kind, rows in result.validation.items()
            for layer_type, row in rows.items()
            for method, m in row["methods"].items()
        ]
        self.tracker.table("validation", columns, data)

    def close(self) -> None:
        self.file.close()
        self.tracker.finish()


def _fmt(value: float | None) -> str:
    return f"{'-':>10}" if value is None else f"{value:>10.4g}"


def _silent(message: str) -> None:
    """`echo` of ranks other than 0."""
