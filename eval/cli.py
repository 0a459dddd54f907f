"""`weightcast eval` (eval stage's command, the last of zoo <- collect <- train_predictor <- eval):
evaluate predictor bundles zero-shot on held-out tasks and write a report folder; `run_eval` is
the same from Python (the quick start calls it).

    weightcast eval --config configs/eval/debug.yaml [key.sub=value ...]
    weightcast eval --config configs/eval/zero-shot.yaml          # the shipped bundles, full suite

What a run does, in order; every check comes before the first training run, so bad input stops
eval with a message and leaves no run half-reported:
  open every method's bundle (unavailable ones are reported, or stop eval with require_bundles)
  -> zero-shot checks (tasks and the forecast collection) -> preflight of every (task, method)
  -> forecast error on the held-out collection (forecast.json)
  -> speed-up runs, each appended to results.jsonl as it finishes (a re-run resumes)
  -> report.md, report.json, plots

With tracking.name=wandb (job_type=eval) the wandb run starts before any work (a missing login
stops eval there, with what to do), in the pipeline's group (`tracking.group`, default the
collection the first bundle was trained on), declares each bundle it uses as an input Artifact
(lineage), records every bundle's source, revision and resolved Hub commit in its config, logs
each speed-up run's curve as it finishes (`run/<task>/<method>/lr<0_003>/<role>-seed<seed>/*`), the
report's tables and plots at the end. A tracker failure after the work has started prints a
warning and loses nothing: the report is written and its tables printed.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from huggingface_hub import constants as hub_constants

from weightcast.collect import Collection, CollectError
from weightcast.collect.schema import INDEX_NAME
from weightcast.collect.tracking import collection_artifact
from weightcast.eval.config import (
    BundleUnavailable,
    EvalConfig,
    check_zero_shot,
    load_eval_config,
    open_method_bundle,
)
from weightcast.eval.forecast import ForecastResult, evaluate_forecast
from weightcast.eval.report import REPORT_FILE, describe_methods, forecast_tables, speedup_table, write_report
from weightcast.eval.speedup import RUN, mixed_sittings, preflight, run_speedup, summarize
from weightcast.train_predictor.bundle import (
    SHIPPED_PREFIX, BundleFormatError, PredictorBundle, bundle_artifact, shipped_bundle_folder,
)
from weightcast.cli import config_command
from weightcast.zoo.config import ConfigError
from weightcast.zoo.rundir import prepare_run_dir, write_json_atomic
from weightcast.zoo.tracking import Tracker, make_tracker

__all__ = ["EvalResult", "FORECAST_FILE", "run_eval", "COMMAND"]

FORECAST_FILE = "forecast.json"


@dataclass
class EvalResult:
    out_dir: Path
    report: Path  # report.md
    files: dict[str, Path]  # every report file by name
    methods: list[dict[str, Any]]  # `describe_methods` rows: availability, kind, trained-on collection
    forecast: ForecastResult | None
    summary: dict[str, Any] | None  # `eval.speedup.summarize`
    notes: list[str]


def run_eval(config: EvalConfig, *, echo: Callable[[str], None] = print) -> EvalResult:
    """Run the evaluations of `config` and write its report folder (see the module docstring)."""
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, echo)
    finally:
        torch.set_num_threads(threads)


def _run(config: EvalConfig, echo: Callable[[str], None]) -> EvalResult:
    bundles, unavailable = _open_bundles(config)
    notes = [f"method {name!r} not available: {why}" for name, why in unavailable.items()]
    collection = None
    if config.speedup.enabled:
        tasks = {label: entry.task for label, entry in config.speedup.tasks.items()}
        notes += check_zero_shot(tasks, bundles, config.allow_seen, "speedup.tasks")
        notes += preflight(config, bundles)
    if config.forecast.collection:
        try:
            collection = Collection(config.forecast.collection)
        except CollectError as err:
            raise ConfigError(f"forecast.collection: {err}") from None
        tasks = {r["task"]: r["task"] for r in collection.runs(split=config.forecast.split)}
        if not tasks:
            raise ConfigError(
                f"forecast.collection {collection.name!r} ({collection.root}) has no runs of split "
                f"{config.forecast.split!r}; its tasks: {sorted({r['task'] for r in collection.runs()})}"
            )
        where = f"forecast.collection {collection.name!r}"
        notes += check_zero_shot(tasks, bundles, config.allow_seen, where)
    for note in notes:
        echo(f"note: {note}")

    out = prepare_run_dir(config.out_dir, config)
    tracker = _start_tracking(config, out, bundles, collection)  # before any work: a missing login stops here
    try:
        return _work(config, echo, bundles, unavailable, notes, collection, out, tracker)
    finally:
        tracker.finish()


def _work(
    config: EvalConfig, echo: Callable[[str], None], bundles: dict[str, PredictorBundle],
    unavailable: dict[str, str], notes: list[str], collection: Collection | None, out: Path,
    tracker: Tracker,
) -> EvalResult:
    forecast = None
    if collection is not None:
        echo(f"forecast error on {collection.name!r} ({config.forecast.collection})")
        forecast = evaluate_forecast(collection, _distinct(config, bundles), config.forecast)
        write_json_atomic(out / FORECAST_FILE, forecast.to_dict())
        notes += [f"forecast: {n}" for n in forecast.notes]
    summary, rows = None, []
    if config.speedup.enabled:
        rows = run_speedup(config, bundles, out, echo=echo, on_row=lambda row: _log_run(tracker, row))
        summary = summarize(config, rows)
        notes += mixed_sittings(rows)
    methods = describe_methods(config, bundles, unavailable)
    files = write_report(out, config, methods, forecast, summary, rows, notes)
    _track(tracker, forecast, summary, files)
    return EvalResult(out, files[REPORT_FILE], files, methods, forecast, summary, notes)


def _open_bundles(config: EvalConfig) -> tuple[dict[str, PredictorBundle], dict[str, str]]:
    """(method -> bundle, method -> why it is unavailable)."""
    bundles, unavailable = {}, {}
    for name, method in config.methods.items():
        try:
            bundles[name] = open_method_bundle(method)
        except BundleUnavailable as err:
            if config.require_bundles:
                raise ConfigError(
                    f"method {name!r}: {err} (require_bundles=true; set it to false to report the method as "
                    "not available and evaluate the others)"
                ) from None
            unavailable[name] = str(err)
        except BundleFormatError as err:
            raise ConfigError(f"method {name!r}: {err}") from None
    return bundles, unavailable


def _distinct(config: EvalConfig, bundles: dict[str, PredictorBundle]) -> dict[str, PredictorBundle]:
    """One entry per distinct bundle source (LFD-2 in nowcast and farcast modes is one bundle),
    named by its kind when no other bundle has that kind, else by its first method's name."""
    by_source: dict[str, tuple[str, PredictorBundle]] = {}
    for name, bundle in bundles.items():
        by_source.setdefault(config.methods[name].source(), (name, bundle))
    kinds = [bundle.kind for _, bundle in by_source.values()]
    return {(b.kind if kinds.count(b.kind) == 1 else name): b for name, b in by_source.values()}


def _start_tracking(
    config: EvalConfig, out: Path, bundles: dict[str, PredictorBundle], collection: Collection | None
) -> Tracker:
    """The eval run's tracker, with the bundles (and the forecast collection's index) as input
    Artifacts and the bundles' commits in its config."""
    trained_on = [str(b.trained_on.get("collection") or "none") for b in bundles.values()]
    group = next((c for c in trained_on if not c.startswith("none")), None)  # rule-based: "none (...)"
    tracker = make_tracker(
        config.tracking, job_type="eval", name=config.name, out_dir=out, config=config, group=group
    )
    tracker.update_config({
        "bundles": {
            name: {"source": config.methods[name].source(), "revision": config.methods[name].revision,
                   "commit": bundle.revision, "kind": bundle.kind}
            for name, bundle in bundles.items()
        }
    })  # fmt: skip
    used = set()
    for name, bundle in bundles.items():
        source = config.methods[name].bundle
        if source is None or source in used:  # rule-based: built here, nothing to trace
            continue
        used.add(source)
        where = _bundle_location(source, bundle)
        metadata = {"method": name, "kind": bundle.kind, "source": source, "commit": bundle.revision}
        tracker.use_artifact(bundle_artifact(source), "predictor-bundle", where, metadata=metadata)
    index = Path(config.forecast.collection or "") / INDEX_NAME
    if collection is not None and index.is_file():  # the held-out runs of the forecast error
        tracker.use_artifact(collection_artifact(collection.name), "collection", index)
    return tracker


def _bundle_location(source: str, bundle: PredictorBundle) -> str | Path:
    """A bundle's files: its folder (a shipped bundle's inside the package), or for a Hub bundle the
    URL of the commit it resolved to (referenced, not checksummed)."""
    if source.startswith(SHIPPED_PREFIX):
        return shipped_bundle_folder(source[len(SHIPPED_PREFIX):])
    if Path(source).is_dir():
        return Path(source)
    return f"{hub_constants.ENDPOINT}/{source}/tree/{bundle.revision or 'main'}"


def _log_run(tracker: Tracker, row: dict[str, Any]) -> None:
    """One finished speed-up run, live: its validation curve over its own x axis (epochs or
    steps), its best and its seconds."""
    lr = f"{row['lr']:g}".replace(".", "_")  # wandb reads a '.' in a key as nesting
    prefix = f"run/{row['task']}/{row['method']}/lr{lr}/{row.get('role', RUN)}-seed{row['seed']}"
    unit = "step" if row["unit"] == "steps" else "epoch"
    tracker.define_step(prefix, unit)
    metric = f"{prefix}/val_{row['metric_name']}"
    for x, value, loss in zip(row[unit], row["val_metric"], row["val_loss"]):
        tracker.log({f"{prefix}/{unit}": x, metric: value, f"{prefix}/val_loss": loss})
    best = max((v for v in row["val_metric"] if math.isfinite(v)), default=None)
    tracker.summarize({f"{prefix}/best": best, f"{prefix}/seconds": row["wall_time"][-1]})


def _track(
    tracker: Tracker, forecast: ForecastResult | None, summary: dict[str, Any] | None,
    files: dict[str, Path],
) -> None:
    """The report's tables, plots and geomean speed-ups on the `tracking` tracker (wandb or none)."""
    if forecast is not None and forecast.rows:
        columns = list(vars(forecast.rows[0]))
        tracker.table("forecast", columns, [list(vars(r).values()) for r in forecast.rows])
    if summary is not None:
        columns = ["task", "method", "units_mean", "speedup_units", "speedup_wall", "best", "status"]
        data = [
            [label, name, *(s[k] for k in columns[2:])]
            for label, task in summary["tasks"].items()
            for name, s in task["methods"].items()
        ]
        tracker.table("speedup", columns, data)
        for name, means in summary["methods"].items():
            tracker.summarize({
                f"{name}/geomean_speedup_units": means["geomean_units"],
                f"{name}/geomean_speedup_wall": means["geomean_wall"],
            })
    for path in files.values():
        if path.suffix == ".png":
            tracker.image(f"plots/{path.stem}", path)


def _eval(args: argparse.Namespace) -> int:
    config = load_eval_config(args.config, args.overrides)
    result = run_eval(config)
    if result.forecast is not None:
        print(forecast_tables(result.forecast))
    if result.summary is not None:
        print(speedup_table(result.summary))
    print(f"report: {result.report}")
    return 0


COMMAND = config_command(
    "eval",
    "eval",
    "evaluate predictor bundles zero-shot on held-out tasks: forecast error and training speed-up",
    _eval,
)
