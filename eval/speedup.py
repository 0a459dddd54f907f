"""Training speed-up on unseen tasks (eval stage, the last of zoo <- collect <- train_predictor <-
eval): every held-out task is trained from scratch by plain training and by every method (a
predictor bundle applied by `NowcastHook`), with the same seeds, and the runs are compared.

Definitions (per task; S seeds, E = the task entry's `epochs`, the budget):
- Curves: a run's validation metric after each epoch, epoch 0 = the initial model (the same for
  every method of a seed). A method's mean curve is the mean over its seeds at each epoch
  (ignoring runs that diverged before it); its best = the maximum of its mean curve.
- Target: the task entry's `target` when given, else `best - (1 - fraction) * |best|` with
  `best` = plain training's best (`fraction` x best for a positive metric, 0.95 by default).
- Epochs to target of a run: the first epoch whose metric is >= target. A run that never gets
  there ("not reached") counts as E epochs. Wall-clock to target: the run's seconds from the start
  of training to the end of that epoch, evaluation and the nowcaster's time included; a run that
  never gets there counts its seconds per epoch times E.
- Speed-up of a method: plain's mean (over seeds) epochs to target / the method's mean; the same
  for wall-clock. Above 1 is faster. Spreads are population standard deviations over seeds.
- Quality kept: the method's best is >= plain's best - quality_tolerance x |plain's best| (1%
  relative by default). Otherwise the task's status is "target not kept" and the speed-up that
  counts is min(s, 1/s) of the measured one s: never above 1.0x, and as far below 1 as the
  method claimed to be faster (2.0x that loses quality counts as 0.5x).
- Summary across tasks: the geometric mean per method of the speed-ups that count.
- Overhead of a run: the nowcaster's seconds (snapshots, predictions, guard probes) over the
  rest of its seconds (training and evaluation), i.e. its cost as a fraction of an epoch's time;
  per method the mean over seeds, and the largest run's across tasks in the summary.

Runs go seed by seed (plain training and every method for one seed, then the next seed), after
one untimed warm-up epoch per task. They are appended to `<out_dir>/results.jsonl` as each
finishes (nothing of an unfinished run is written); an interrupted evaluation run again skips the
(task, method, seed) runs already there. A run's key hashes its task entry, method config, bundle
weights, seed and device, so a changed config or a retrained bundle is run again rather than
mixed with old results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from weightcast.eval.config import EvalConfig, MethodConfig, bundle_fingerprint
from weightcast.eval.runtime import NowcastHook
from weightcast.eval.runtime import Nowcaster, NowcastWarning
from weightcast.train_predictor.bundle import MissingPredictorError, PredictorBundle
from weightcast.zoo.augment import augmentation_inputs
from weightcast.zoo.config import ConfigError
from weightcast.zoo.optim import build_optimizer
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import build_model, train

__all__ = [
    "PLAIN",
    "RESULTS_FILE",
    "target_value",
    "epochs_to_target",
    "mean_curve",
    "speedup",
    "quality_kept",
    "counted_speedup",
    "geometric_mean",
    "preflight",
    "run_speedup",
    "summarize_task",
    "summarize",
]

PLAIN = "plain"  # the reference: training without a predictor
RESULTS_FILE = "results.jsonl"


def target_value(best: float, fraction: float) -> float:
    """`fraction` of `best` for a positive metric; `best - (1 - fraction) |best|` in general, so
    the target is never above the best (R^2 may be negative)."""
    return best - (1.0 - fraction) * abs(best)


def epochs_to_target(metrics: Sequence[float], target: float) -> int | None:
    """The first epoch (index into `metrics`, epoch 0 first) whose metric is >= target; None if
    none is (NaN never is)."""
    for epoch, value in enumerate(metrics):
        if value >= target:
            return epoch
    return None


def mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    """Mean over runs at each epoch, ignoring NaN and runs that stopped earlier; NaN where no
    run has a finite value."""
    length = max(len(c) for c in curves)
    table = np.full((len(curves), length), np.nan)
    for row, curve in zip(table, curves):
        row[: len(curve)] = curve
    table[~np.isfinite(table)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        return [float(v) for v in np.nanmean(table, axis=0)]


def speedup(plain: float, method: float) -> float:
    """plain / method (epochs or seconds to target); 1.0 when both are 0."""
    if method == 0:
        return 1.0 if plain == 0 else math.inf
    return plain / method


def quality_kept(method_best: float, plain_best: float, tolerance: float) -> bool:
    """Whether `method_best` is within `tolerance` (relative) below `plain_best`, or above it."""
    return method_best >= plain_best - tolerance * abs(plain_best)


def counted_speedup(value: float, kept: bool) -> float:
    """The speed-up that counts in the summary: as measured when quality is kept, else
    min(value, 1 / value), at most 1.0x (the module docstring)."""
    return value if kept else min(value, 1.0 / value)


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log v)) of positive values; NaN for none."""
    if not values:
        return math.nan
    return math.exp(sum(math.log(v) for v in values) / len(values))


def preflight(config: EvalConfig, bundles: dict[str, PredictorBundle]) -> list[str]:
    """Check every (task, method) pair before anything is trained: the task builds, its model and
    augmentation fit, each bundle serves the model's layer types with a usable window, period and
    horizon, and every method jumps at least once within the budget. Raises `ConfigError` naming
    the pair; returns notes for the report (parameters left untouched, e.g. of unknown type)."""
    notes = []
    for label, entry in config.speedup.tasks.items():
        train_config = config.train_config(label, config.speedup.seeds[0])
        task = get_task(entry.task, entry.data_dir)
        where = f"speedup.tasks.{label}"
        if task.spec.input_kind not in augmentation_inputs(entry.augmentation):
            raise ConfigError(
                f"{where}: augmentation {entry.augmentation!r} applies to "
                f"{augmentation_inputs(entry.augmentation)} inputs, task {entry.task!r} has "
                f"{task.spec.input_kind!r} inputs"
            )
        try:
            model = build_model(train_config, task)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        steps_per_epoch = len(task.x_train) // min(entry.batch_size, len(task.x_train))
        for name, bundle in bundles.items():
            method = config.methods[name]
            optimizer = build_optimizer(model.parameters(), train_config.optimizer)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NowcastWarning)
                try:
                    nowcaster = Nowcaster(model, optimizer, bundle, method.nowcast, probe=lambda m: 0.0)
                except (ConfigError, MissingPredictorError) as err:
                    raise ConfigError(
                        f"method {name!r} on {where} ({entry.arch} on {entry.task}): {err}"
                    ) from None
            notes += [f"method {name!r} on {label!r}: {w.message}" for w in caught]
            _check_jumps(name, method, nowcaster, entry.epochs, steps_per_epoch, where)
    return notes


def run_speedup(
    config: EvalConfig,
    bundles: dict[str, PredictorBundle],
    out_dir: str | Path,
    *,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train every (task, seed, method) of `config` not yet in `<out_dir>/results.jsonl`, plain
    training first for each seed, appending each run's row as it finishes; return the rows of this
    config (finished earlier or now) in that order. `bundles`: method name -> bundle,
    the available methods."""
    path = Path(out_dir) / RESULTS_FILE
    done = _read_results(path)
    fingerprints = {name: bundle_fingerprint(bundle) for name, bundle in bundles.items()}
    # Seed by seed, all methods of a seed in a row: a machine whose load drifts slows every
    # method alike instead of the seeds run last.
    plan = [
        (label, name, seed)
        for label in config.speedup.tasks
        for seed in config.speedup.seeds
        for name in [PLAIN, *bundles]
    ]
    skipped = sum(_run_key(config, *p, fingerprints.get(p[1])) in done for p in plan)
    echo(f"speed-up: {len(plan)} runs ({len(config.speedup.tasks)} tasks x {len(bundles) + 1} methods x "
         f"{len(config.speedup.seeds)} seeds), {skipped} already in {path}")
    rows, warm = [], set()
    for label, name, seed in plan:
        key = _run_key(config, label, name, seed, fingerprints.get(name))
        if key not in done:
            if label not in warm:
                _warm_up(config, label)
                warm.add(label)
            method = config.methods.get(name)
            done[key] = _train_run(config, label, name, method, bundles.get(name), seed, key)
            _append_result(path, done[key])
            echo(_run_line(done[key]))
        rows.append(done[key])
    return rows


def summarize_task(
    rows: Sequence[dict[str, Any]],
    budget: int,
    fraction: float,
    tolerance: float,
    target: float | None = None,
) -> dict[str, Any]:
    """Per-method results of one task from its run rows (plain's included): the target, then for
    each method epochs and seconds to target (mean, std over seeds), speed-ups, best and final
    metric, jumps, and its status (ok | target not kept | not reached | reached by k/S seeds)."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    plain_best = _best(by_method[PLAIN])
    goal = target_value(plain_best, fraction) if target is None else target
    methods = {name: _method_stats(runs, goal, budget) for name, runs in by_method.items()}
    reference = methods[PLAIN]
    for name, stats in methods.items():
        kept = quality_kept(stats["best"], plain_best, tolerance)
        stats["quality_kept"] = kept
        stats["speedup_epochs"] = speedup(reference["epochs_mean"], stats["epochs_mean"])
        stats["speedup_wall"] = speedup(reference["wall_mean"], stats["wall_mean"])
        stats["counted_epochs"] = counted_speedup(stats["speedup_epochs"], kept)
        stats["counted_wall"] = counted_speedup(stats["speedup_wall"], kept)
        seeds = len(stats["epochs"])
        if not kept:
            stats["status"] = "target not kept"
        elif stats["reached"] == 0:
            stats["status"] = "not reached"
        elif stats["reached"] < seeds:
            stats["status"] = f"reached by {stats['reached']}/{seeds} seeds"
        else:
            stats["status"] = "ok"
    first = rows[0]
    return {
        "task": first["task"], "task_name": first["task_name"], "arch": first["arch"],
        "optimizer": first["optimizer"], "metric_name": first["metric_name"], "budget": budget,
        "plain_best": plain_best, "target": goal, "target_fixed": target is not None, "methods": methods,
    }


def summarize(config: EvalConfig, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`{"tasks": {label: summarize_task(...)}, "methods": {name: geometric means over tasks}}`
    for the rows of `run_speedup`."""
    tasks = {}
    for label, entry in config.speedup.tasks.items():
        task_rows = [r for r in rows if r["task"] == label]
        tasks[label] = summarize_task(
            task_rows, entry.epochs, config.speedup.fraction, config.speedup.quality_tolerance, entry.target
        )
    names = list(dict.fromkeys(r["method"] for r in rows if r["method"] != PLAIN))
    methods = {}
    for name in names:
        stats = [t["methods"][name] for t in tasks.values() if name in t["methods"]]
        methods[name] = {
            "tasks": len(stats),
            "geomean_epochs": geometric_mean([s["counted_epochs"] for s in stats]),
            "geomean_wall": geometric_mean([s["counted_wall"] for s in stats]),
            "kept": sum(s["quality_kept"] for s in stats),
            "reached": sum(s["reached"] > 0 for s in stats),
            "accepted": sum(s["jumps"]["accepted"] for s in stats),
            "rolled_back": sum(s["jumps"]["rolled_back"] for s in stats),
            "overhead_max": max(s["overhead_max"] for s in stats),
        }
    return {"tasks": tasks, "methods": methods}


def _method_stats(runs: list[dict[str, Any]], target: float, budget: int) -> dict[str, Any]:
    """Epochs / seconds to target per seed (not reached: the budget), their mean and std, best and
    final metric, jump counters summed over seeds and the nowcaster's seconds per run."""
    epochs, walls, reached = [], [], 0
    for run in runs:
        epoch = epochs_to_target(run["val_metric"], target)
        if epoch is None:
            last = len(run["wall_time"]) - 1
            epochs.append(budget)
            walls.append(run["wall_time"][-1] / max(last, 1) * budget)
        else:
            reached += 1
            epochs.append(epoch)
            walls.append(run["wall_time"][epoch])
    finals = [_last_finite(run["val_metric"]) for run in runs]
    jumps = {k: sum((run["jumps"] or {}).get(k, 0) for run in runs) for k in _JUMP_KEYS}
    jumps["rolled_back"] = _rolled_back(jumps)
    jumps["seconds"] = sum((run["jumps"] or {}).get("seconds", 0.0) for run in runs) / len(runs)
    overheads = [_overhead(run) for run in runs]
    return {
        "seeds": [run["seed"] for run in runs],
        "epochs": epochs,
        "epochs_mean": float(np.mean(epochs)),
        "epochs_std": float(np.std(epochs)),
        "wall": walls,
        "wall_mean": float(np.mean(walls)),
        "wall_std": float(np.std(walls)),
        "reached": reached,
        "best": _best(runs),
        "best_per_seed": [_best([run]) for run in runs],
        "final_mean": float(np.nanmean(finals)),
        "final_std": float(np.nanstd(finals)),
        "diverged": sum(run["diverged"] for run in runs),
        "jumps": jumps,
        "overhead": float(np.mean(overheads)),
        "overhead_max": float(np.max(overheads)),
    }


def _overhead(run: dict[str, Any]) -> float:
    """The nowcaster's seconds (snapshots, predictions, guard probes) as a fraction of the rest of
    the run's seconds (training and evaluation): its cost relative to an epoch, averaged over epochs."""
    seconds = (run["jumps"] or {}).get("seconds", 0.0)
    return seconds / max(run["wall_time"][-1] - seconds, 1e-12)


_JUMP_KEYS = ("attempted", "accepted", "rolled_back_guard", "rolled_back_nonfinite")


def _best(runs: list[dict[str, Any]]) -> float:
    """The maximum of the runs' mean curve."""
    curve = [v for v in mean_curve([run["val_metric"] for run in runs]) if math.isfinite(v)]
    return max(curve) if curve else math.nan


def _rolled_back(jumps: dict[str, Any]) -> int:
    return jumps["rolled_back_guard"] + jumps["rolled_back_nonfinite"]


def _last_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else math.nan


def _check_jumps(
    name: str, method: MethodConfig, nowcaster: Nowcaster, epochs: int, steps_per_epoch: int, where: str
) -> None:
    """A method whose first jump would come after the run's last nowcaster call cannot speed it up."""
    unit = "epochs" if not method.every_steps else f"calls every {method.every_steps} optimizer steps"
    calls = epochs if not method.every_steps else epochs * steps_per_epoch // method.every_steps
    resolved = nowcaster.config
    first = resolved.period if resolved.mode == "nowcast" else resolved.farcast_after
    if first > calls:
        setting = "period" if resolved.mode == "nowcast" else "farcast_after"
        raise ConfigError(
            f"method {name!r} on {where}: its first jump comes after {setting}={first} {unit} (the bundle's "
            f"window is {nowcaster.bundle.input_length}), but the run has only {calls}; train longer "
            "(epochs), call the nowcaster more often (every_steps) or use a bundle with a shorter window"
        )


def _warm_up(config: EvalConfig, label: str) -> None:
    """One untimed epoch of the task, so that first-call costs (kernel selection, allocator
    growth) do not fall on the wall-clock of whichever run comes first."""
    train(dataclasses.replace(config.train_config(label, config.speedup.seeds[0]), epochs=1))


def _train_run(
    config: EvalConfig, label: str, name: str, method: MethodConfig | None, bundle: PredictorBundle | None,
    seed: int, key: str,
) -> dict[str, Any]:
    """Train one (task, method, seed) and return its results row."""
    train_config = config.train_config(label, seed)
    hook = None
    if bundle is not None:
        hook = NowcastHook(
            bundle, method.nowcast, every_steps=method.every_steps, probe_size=method.probe_size
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NowcastWarning)  # reported by preflight; rollbacks are counted
        result = train(train_config, hooks=[hook] if hook else [])
    history = result.history
    jumps = None
    if hook is not None:
        stats = hook.stats
        jumps = {k: getattr(stats, k) for k in (*_JUMP_KEYS, "calls", "seconds")}
    entry = config.speedup.tasks[label]
    return {
        "key": key, "task": label, "task_name": entry.task, "arch": entry.arch,
        "optimizer": entry.optimizer.name, "method": name, "seed": seed, "epochs": entry.epochs,
        "metric_name": history.metric_name, "diverged": history.diverged,
        "val_metric": history.column("val_metric"), "val_loss": history.column("val_loss"),
        "train_loss": history.column("train_loss"), "wall_time": history.column("wall_time"), "jumps": jumps,
    }


def _run_key(config: EvalConfig, label: str, name: str, seed: int, fingerprint: str | None) -> str:
    method = None if name == PLAIN else dataclasses.asdict(config.methods[name])
    payload = {
        "task": dataclasses.asdict(config.speedup.tasks[label]), "method": method, "bundle": fingerprint,
        "seed": seed, "device": config.device,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _run_line(row: dict[str, Any]) -> str:
    metric = row["val_metric"]
    best = max((v for v in metric if math.isfinite(v)), default=math.nan)
    jumps = row["jumps"]
    jumped = ""
    if jumps is not None:
        jumped = f", jumps {jumps['accepted']} accepted / {_rolled_back(jumps)} rolled back"
    return (
        f"  {row['task']:<20} {row['method']:<16} seed {row['seed']}: best {row['metric_name']} {best:.4f} "
        f"in {len(metric) - 1} epochs, {row['wall_time'][-1]:.1f} s{jumped}"
    )


def _read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of a results file by key. A last line cut short by a kill is dropped from the file, so
    that appending goes on after the last complete row."""
    if not path.is_file():
        return {}
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    if complete != text:
        path.write_text(complete)
    rows = {}
    for number, line in enumerate(complete.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(
                f"{path}, line {number}, is not JSON: delete that line (or the file) to run it again"
            ) from None
        rows[row["key"]] = row
    return rows


def _append_result(path: Path, row: dict[str, Any]) -> None:
    """Append one row and flush it to disk: a finished run is never lost, an unfinished one never written."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
