"""Training speed-up on unseen tasks (eval stage, the last of zoo <- collect <- train_predictor <-
eval): every held-out task is trained from scratch by plain training and by every method (a
predictor bundle applied by `NowcastHook`), with the same seeds and the same learning rate, the
one that is best for plain training, and the runs are compared.

Definitions (per task; S seeds; the budget B is the task entry's `epochs`, or its `max_steps` for a
step-based task, whose curves are validated every `eval_every_steps` steps; "units" are epochs or
optimizer steps accordingly):
- Learning rate: plain training runs every lr of the task's grid (`lr_grid`, default
  `eval.config.DEFAULT_LR_GRIDS` of its optimizer) with every seed; the lr whose plain runs have
  the highest best (below) is the task's lr, ties going to the lr whose mean curve reaches the
  headline fraction of it sooner, then to the smaller lr (`select_lr`). An lr chosen at an edge of
  the grid adds the next lr past that edge (`lr_beyond_edge`) and the choice is made again, up to
  `speedup.extend_lr_grid` times. Plain training and every method then train with the chosen lr.
  `speedup.tune_lr=false` uses the entry's `optimizer.lr` alone.
- Curves: a run's validation metric at each record of its History (record 0 = the initial model,
  the same for every method of a seed), at epochs or steps. A method's mean curve is the mean over
  its seeds at each record (ignoring runs that diverged before it); its best = the maximum of its
  mean curve.
- Targets: the headline `fraction` (0.99) and each of `extra_fractions` (0.95) of plain training's
  best, `best - (1 - fraction) * |best|` (so never above the best, also for a negative R^2); and
  the task's `absolute_target` when given (NiNo's protocol: a fixed metric value).
- Units to target of a run: the epoch or step of its first record whose metric is >= the target.
  A run that never gets there ("not reached") counts B. Wall-clock to target: the run's seconds
  from the start of training to that record, evaluation and the predictor's time (snapshots,
  predictions, guard) included; a run that never gets there counts its seconds per unit times B.
- Speed-up of a method: plain's mean (over seeds) units to target / the method's mean; the same for
  wall-clock. Above 1 is faster. Spreads are population standard deviations over seeds.
- Quality kept: the method's best is >= plain's best - quality_tolerance x |plain's best| (1%
  relative by default). Otherwise the task's status is "target not kept" and the speed-up that
  counts is min(s, 1/s) of the measured one s: never above 1.0x, and as far below 1 as the
  method claimed to be faster (2.0x that loses quality counts as 0.5x).
- Summary across tasks, per target: the geometric mean per method of the speed-ups that count.
- Overhead of a run: the nowcaster's seconds (snapshots, predictions, guard probes) over the
  rest of its seconds (training and evaluation); per method the mean over seeds, and the largest
  run's across tasks in the summary.

Runs go task by task: one untimed warm-up epoch, plain training at every lr of the grid (role
"grid", for the choice only), then plain training again and every method at the chosen lr (role
"run", seed by seed, all of a seed in a row, so that a machine whose load drifts slows plain and
every method alike: the reference's curve is the grid run's, training being deterministic on a
CPU, but its wall-clock is measured beside the methods'). With one lr (a one-lr grid, or
`tune_lr=false`) there is no grid phase. Runs are appended to `<out_dir>/results.jsonl` as each
finishes (nothing of an unfinished run is written); an interrupted evaluation run again skips the
runs already there. A run's key hashes its task entry, learning rate, role, method config, bundle
weights, seed and device, so a changed config or a retrained bundle is run again rather than
mixed with old results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from weightcast.eval.config import EvalConfig, EvalTask, MethodConfig, bundle_fingerprint
from weightcast.eval.runtime import NowcastHook
from weightcast.eval.runtime import Nowcaster, NowcastWarning
from weightcast.train_predictor.bundle import MissingPredictorError, PredictorBundle
from weightcast.zoo.augment import augmentation_inputs
from weightcast.zoo.config import ConfigError
from weightcast.zoo.optim import build_optimizer
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import build_model, steps_per_epoch, total_steps, train

__all__ = [
    "PLAIN",
    "RESULTS_FILE",
    "mixed_sittings",
    "ABSOLUTE",
    "GRID",
    "RUN",
    "target_value",
    "target_name",
    "task_targets",
    "epochs_to_target",
    "units_to_target",
    "mean_curve",
    "speedup",
    "quality_kept",
    "counted_speedup",
    "geometric_mean",
    "select_lr",
    "lr_beyond_edge",
    "budget_of",
    "preflight",
    "run_speedup",
    "summarize_task",
    "summarize",
]

PLAIN = "plain"  # the reference: training without a predictor
RESULTS_FILE = "results.jsonl"
GRID, RUN = "grid", "run"  # a row's role: plain training over the lr grid, or a compared run
ABSOLUTE = "absolute"  # name of a task's fixed target


def target_value(best: float, fraction: float) -> float:
    """`fraction` of `best` for a positive metric; `best - (1 - fraction) |best|` in general, so
    the target is never above the best (R^2 may be negative)."""
    return best - (1.0 - fraction) * abs(best)


def target_name(fraction: float) -> str:
    """"99%" for 0.99: how a fraction target is named in the report."""
    return f"{100 * fraction:g}%"


def task_targets(
    plain_best: float, fractions: Sequence[float], absolute: float | None = None
) -> dict[str, float]:
    """Name -> value of a task's targets: each fraction of plain's best in the order given (the
    first is the headline), then the fixed `absolute` one when given."""
    targets = {target_name(f): target_value(plain_best, f) for f in fractions}
    if absolute is not None:
        targets[ABSOLUTE] = float(absolute)
    return targets


def units_to_target(metrics: Sequence[float], units: Sequence[float], target: float) -> float | None:
    """The unit (epoch or step, `units[i]` of record i) of the first record whose metric is >=
    target; None if none is (NaN never is)."""
    for unit, value in zip(units, metrics):
        if value >= target:
            return unit
    return None


def epochs_to_target(metrics: Sequence[float], target: float) -> int | None:
    """The first epoch (index into `metrics`, epoch 0 first) whose metric is >= target; None if
    none is (NaN never is)."""
    return units_to_target(metrics, range(len(metrics)), target)


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


def select_lr(plain_rows: Sequence[dict[str, Any]], fraction: float = 0.99) -> dict[str, Any]:
    """The learning rate for a task from its plain runs over the lr grid (rows with `lr`, `seed`,
    `val_metric`, `unit` and `step`): `{"grid": [lrs ascending], "best": [plain's best mean metric
    per lr], "to_target": [units (epochs or steps) at which that lr's mean curve first reaches
    `fraction` of its own best], "chosen": lr, "at_edge": bool}`. The chosen lr has the highest
    best (the maximum of the mean curve over seeds; NaN when every run diverged at once, never
    chosen); ties go to the lr that gets there sooner, then to the smaller lr. `at_edge`: the
    grid has more than one lr and the chosen one is its smallest or largest, so a wider grid
    might do better."""
    grid = sorted({row["lr"] for row in plain_rows})
    bests, to_target = [], []
    for lr in grid:
        runs = [row for row in plain_rows if row["lr"] == lr]
        curve = mean_curve([run["val_metric"] for run in runs])
        best = max((v for v in curve if math.isfinite(v)), default=math.nan)
        longest = max(runs, key=lambda run: len(run["val_metric"]))
        at = units_to_target(curve, _units(longest, longest["unit"]), target_value(best, fraction))
        bests.append(best)
        to_target.append(math.inf if at is None else at)
    finite = [(b, -t, -i) for i, (b, t) in enumerate(zip(bests, to_target)) if math.isfinite(b)]
    if not finite:
        raise ConfigError(
            f"plain training diverged at every learning rate of the grid {grid}; give the task an "
            "lr_grid of smaller learning rates"
        )
    index = -max(finite)[2]
    return {
        "grid": grid, "best": bests, "to_target": to_target, "chosen": grid[index],
        "at_edge": len(grid) > 1 and index in (0, len(grid) - 1),
    }


def lr_beyond_edge(grid: Sequence[float], chosen: float) -> float:
    """The next learning rate past the edge of `grid` (ascending, >= 2 values) at which `chosen`
    stands, one step of the grid's ratio at that edge further out: [0.01, 0.03, 0.1] and 0.1 give
    0.3 (0.1 x 0.1 / 0.03), and 0.01 gives 0.01 / 3."""
    if chosen == grid[-1]:
        return chosen * grid[-1] / grid[-2]
    if chosen == grid[0]:
        return chosen * grid[0] / grid[1]
    raise ValueError(f"lr {chosen:g} is not at an edge of the grid {list(grid)}")


def budget_of(entry: EvalTask) -> tuple[int, str]:
    """(budget, unit) of a task entry: (max_steps, "steps") for a step-based one, else (epochs, "epochs")."""
    return (entry.max_steps, "steps") if entry.max_steps else (entry.epochs, "epochs")


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
        steps, per_epoch = total_steps(train_config, task), steps_per_epoch(train_config, task)
        for name, bundle in bundles.items():
            method = config.methods[name]
            optimizer = build_optimizer(model.parameters(), train_config.optimizer)
            nowcast = method.nowcast
            if getattr(nowcast, "horizon_schedule", None) == "nino" and nowcast.max_calls is None:
                # NowcastHook fills in the run's length in calls the same way
                calls = steps // (_call_every(method, entry) or per_epoch)
                nowcast = dataclasses.replace(nowcast, max_calls=max(1, calls))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NowcastWarning)
                try:
                    nowcaster = Nowcaster(model, optimizer, bundle, nowcast, probe=lambda m: 0.0)
                except (ConfigError, MissingPredictorError) as err:
                    raise ConfigError(
                        f"method {name!r} on {where} ({entry.arch} on {entry.task}): {err}"
                    ) from None
            notes += [f"method {name!r} on {label!r}: {w.message}" for w in caught]
            _check_jumps(name, method, entry, nowcaster, steps, per_epoch, where)
    return notes


def run_speedup(
    config: EvalConfig,
    bundles: dict[str, PredictorBundle],
    out_dir: str | Path,
    *,
    echo: Callable[[str], None] = print,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every run of `config` not yet in `<out_dir>/results.jsonl` (per task: plain training
    over the lr grid, then every method at the chosen lr; see the module docstring), appending each
    run's row as it finishes; return the rows of this config (finished earlier or now) in that
    order. `bundles`: method name -> bundle, the available methods. `on_row` gets each row trained
    now as it finishes (live tracking). With `config.progress`, a progress bar over all runs shows
    the time left; the per-run lines are printed above it."""
    path = Path(out_dir) / RESULTS_FILE
    done = _read_results(path)
    fingerprints = {name: bundle_fingerprint(bundle) for name, bundle in bundles.items()}
    seeds, tasks = config.speedup.seeds, config.speedup.tasks
    grids = {label: entry.lrs(config.speedup.tune_lr) for label, entry in tasks.items()}
    runs = sum(len(seeds) * (len(grid) * (len(grid) > 1) + 1 + len(bundles)) for grid in grids.values())
    echo(f"speed-up: {runs} runs ({len(tasks)} tasks x {len(seeds)} seeds x (plain at each lr of the grid, "
         f"then plain and {len(bundles)} methods at the chosen lr)), results in {path}")
    rows: list[dict[str, Any]] = []
    trained, warm = 0, set()
    sitting = uuid.uuid4().hex[:12]  # this invocation: rows timed in another one ran under other load
    bar = tqdm(total=runs, unit="run", desc="speed-up", disable=not config.progress, dynamic_ncols=True)

    def say(line: str) -> None:  # above the bar, which is redrawn below it
        with tqdm.external_write_mode():
            echo(line)

    def run(label: str, name: str, seed: int, lr: float, role: str = RUN) -> dict[str, Any]:
        nonlocal trained
        key = _run_key(config, label, name, seed, lr, fingerprints.get(name), role)
        if key in done:
            bar.total -= 1  # read, not run: the time left counts the runs still to train
            bar.refresh()
        else:
            if label not in warm:
                _warm_up(config, label)
                warm.add(label)
            done[key] = _train_run(config, label, name, bundles.get(name), seed, lr, key, role) | {
                "sitting": sitting
            }
            _append_result(path, done[key])
            say(_run_line(done[key]))
            bar.update(1)
            trained += 1
            if on_row is not None:
                on_row(done[key])
        return done[key]

    try:
        for label in tasks:
            lr = grids[label][0]
            if len(grids[label]) > 1:
                plain = [run(label, PLAIN, seed, lr, GRID) for lr in grids[label] for seed in seeds]
                choice = select_lr(plain, config.speedup.fraction)
                for _ in range(config.speedup.extend_lr_grid):
                    if not choice["at_edge"]:
                        break
                    beyond = lr_beyond_edge(choice["grid"], choice["chosen"])
                    bar.total += len(seeds)
                    plain += [run(label, PLAIN, seed, beyond, GRID) for seed in seeds]
                    choice = select_lr(plain, config.speedup.fraction)
                bests = ", ".join(f"{lr:g}: {best:.4f}" for lr, best in zip(choice["grid"], choice["best"]))
                metric = plain[0]["metric_name"]
                say(f"  {label}: lr {choice['chosen']:g} (plain's best mean {metric} per lr: {bests})")
                rows += plain
                lr = choice["chosen"]
            # Plain training again at the chosen lr, timed beside the methods (the same curve on a CPU,
            # whose runs are deterministic; a fair wall-clock reference on a machine whose load drifts).
            rows += [run(label, name, seed, lr) for seed in seeds for name in [PLAIN, *bundles]]
    finally:
        bar.close()
    echo(f"speed-up: {trained} runs trained now, {len(rows) - trained} read from {path}")
    return rows


def summarize_task(
    rows: Sequence[dict[str, Any]],
    budget: int,
    fractions: Sequence[float],
    tolerance: float,
    absolute_target: float | None = None,
    unit: str = "epochs",
) -> dict[str, Any]:
    """Per-target, per-method results of one task from its run rows: plain's at every lr of the
    grid and every method's at the chosen lr (rows with one lr only: no grid). Returns the lr
    choice (`select_lr`), plain's best, the targets (`task_targets`, the first is the headline)
    and for each target each method's units and seconds to target (mean, std over seeds),
    speed-ups, best and final metric, jumps, overhead and status (ok | target not kept | not
    reached | reached by k/S seeds). `target` and `methods` repeat the headline target's."""
    plain = [r for r in rows if r["method"] == PLAIN]
    grid = [r for r in plain if r.get("role") == GRID]
    choice = select_lr(grid or plain, fractions[0])
    rows = [r for r in rows if r["lr"] == choice["chosen"] and r.get("role", RUN) == RUN]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    plain_best = _best(by_method[PLAIN])
    targets = {}
    for name, goal in task_targets(plain_best, fractions, absolute_target).items():
        methods = {method: _method_stats(runs, goal, budget, unit) for method, runs in by_method.items()}
        reference = methods[PLAIN]
        for stats in methods.values():
            kept = quality_kept(stats["best"], plain_best, tolerance)
            stats["quality_kept"] = kept
            stats["speedup_units"] = speedup(reference["units_mean"], stats["units_mean"])
            stats["speedup_wall"] = speedup(reference["wall_mean"], stats["wall_mean"])
            stats["counted_units"] = counted_speedup(stats["speedup_units"], kept)
            stats["counted_wall"] = counted_speedup(stats["speedup_wall"], kept)
            stats["status"] = _status(stats, kept)
        firsts = [m["first_jump"] for m in methods.values() if math.isfinite(m["first_jump"])]
        before = bool(firsts) and reference["reached"] == len(reference["units"]) and (
            reference["units_mean"] <= min(firsts)
        )
        targets[name] = {
            "value": goal, "fixed": name == ABSOLUTE, "methods": methods,
            "before_first_jump": before,  # plain gets there before any method has jumped: nothing to win
        }
    headline = next(iter(targets))
    first = rows[0]
    return {
        "task": first["task"], "task_name": first["task_name"], "arch": first["arch"],
        "optimizer": first["optimizer"], "schedule": first.get("schedule", "constant"),
        "metric_name": first["metric_name"], "budget": budget, "unit": unit, "lr": choice,
        "plain_best": plain_best, "headline": headline, "targets": targets,
        "target": targets[headline]["value"], "methods": targets[headline]["methods"],
    }


def summarize(config: EvalConfig, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`{"targets": [names, headline first], "tasks": {label: summarize_task(...)}, "methods":
    {name: per-target geometric means over tasks, jumps, overhead}, "line_fit": the method the
    others are compared with}` for the rows of `run_speedup`. A method's top-level `geomean_units`
    / `geomean_wall` are the headline target's; `vs_line_fit` (per target) is its geometric mean
    in epochs or steps over the line fit's (the first method with a rule-based `linear-fit`
    predictor; NaN without one): a method that does not beat the line fit has shown nothing."""
    s = config.speedup
    tasks = {}
    for label, entry in s.tasks.items():
        budget, unit = budget_of(entry)
        tasks[label] = summarize_task(
            [r for r in rows if r["task"] == label], budget, [s.fraction, *s.extra_fractions],
            s.quality_tolerance, entry.absolute_target, unit,
        )
    names = list(dict.fromkeys(r["method"] for r in rows if r["method"] != PLAIN))
    target_names = list(dict.fromkeys(t for task in tasks.values() for t in task["targets"]))
    methods = {}
    for name in names:
        per_target = {}
        for target in target_names:
            stats = [
                t["targets"][target]["methods"][name] for t in tasks.values()
                if target in t["targets"] and name in t["targets"][target]["methods"]
            ]
            per_target[target] = {
                "tasks": len(stats),
                "geomean_units": geometric_mean([x["counted_units"] for x in stats]),
                "geomean_wall": geometric_mean([x["counted_wall"] for x in stats]),
                "kept": sum(x["quality_kept"] for x in stats),
                "reached": sum(x["reached"] > 0 for x in stats),
            }
        stats = [t["methods"][name] for t in tasks.values() if name in t["methods"]]
        headline = per_target[target_names[0]]
        methods[name] = {
            **headline,
            "targets": per_target,
            "accepted": sum(x["jumps"]["accepted"] for x in stats),
            "rolled_back": sum(x["jumps"]["rolled_back"] for x in stats),
            "skipped": sum(x["jumps"]["skipped"] for x in stats),
            "overhead_mean": float(np.mean([x["overhead"] for x in stats])),
            "overhead_max": max(x["overhead_max"] for x in stats),
        }
    line_fit = next(
        (n for n in names if (config.methods[n].predictor or {}).get("kind") == "linear-fit"), None
    )
    for means in methods.values():
        for target, at in means["targets"].items():
            base = methods[line_fit]["targets"][target]["geomean_units"] if line_fit else math.nan
            at["vs_line_fit"] = at["geomean_units"] / base if line_fit else math.nan
        means["vs_line_fit"] = means["targets"][target_names[0]]["vs_line_fit"]
    return {"targets": target_names, "tasks": tasks, "methods": methods, "line_fit": line_fit}


def mixed_sittings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Notes for the report: the tasks whose compared runs (plain and the methods at the chosen lr)
    were timed in more than one invocation of eval (resumed, or read from an earlier config's
    results), where their wall-clock speed-ups compare runs made under different machine load."""
    sittings: dict[str, set[str]] = {}
    for row in rows:
        if row["role"] == RUN:
            sittings.setdefault(row["task"], set()).add(row.get("sitting", "unrecorded"))
    return [
        f"wall-clock on {task!r} compares runs timed in {len(ids)} sittings (results resumed or reused): "
        "machine load may have differed between them; epochs and steps are unaffected; for a wall-clock "
        "comparison, run into a fresh out_dir"
        for task, ids in sittings.items()
        if len(ids) > 1
    ]


def _status(stats: dict[str, Any], kept: bool) -> str:
    seeds = len(stats["units"])
    if not kept:
        return "target not kept"
    if stats["reached"] == 0:
        return "not reached"
    if stats["reached"] < seeds:
        return f"reached by {stats['reached']}/{seeds} seeds"
    return "ok"


def _method_stats(runs: list[dict[str, Any]], target: float, budget: int, unit: str) -> dict[str, Any]:
    """Units (epochs or steps) and seconds to target per seed (not reached: the budget), their
    mean and std, best and final metric, jump counters summed over seeds and the overhead."""
    units, walls, reached = [], [], 0
    for run in runs:
        xs = _units(run, unit)
        at = units_to_target(run["val_metric"], xs, target)
        if at is None:
            units.append(budget)
            walls.append(run["wall_time"][-1] / max(xs[len(run["wall_time"]) - 1], 1) * budget)
        else:
            reached += 1
            units.append(at)
            walls.append(run["wall_time"][xs.index(at)])
    finals = [_last_finite(run["val_metric"]) for run in runs]
    jumps = {k: sum((run["jumps"] or {}).get(k, 0) for run in runs) for k in _jump_keys(runs)}
    for key in ("attempted", "accepted", "skipped"):
        jumps.setdefault(key, 0)
    jumps["rolled_back"] = _rolled_back(jumps)
    jumps["seconds"] = sum((run["jumps"] or {}).get("seconds", 0.0) for run in runs) / len(runs)
    overheads = [_overhead(run) for run in runs]
    firsts = [(run["jumps"] or {}).get("at") or [math.nan] for run in runs]
    return {
        "seeds": [run["seed"] for run in runs],
        "unit": unit,
        "units": units,
        "units_mean": float(np.mean(units)),
        "units_std": float(np.std(units)),
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
        "first_jump": float(np.mean([at[0] for at in firsts])),  # NaN: no jump (or plain)
    }


def _units(run: dict[str, Any], unit: str) -> list[float]:
    """The epoch or step of each record of a run (epochs: the record index)."""
    if unit == "steps":
        return list(run["step"])
    return list(range(len(run["val_metric"])))


def _overhead(run: dict[str, Any]) -> float:
    """The nowcaster's seconds (snapshots, predictions, guard probes) as a fraction of the rest of
    the run's seconds (training and evaluation)."""
    seconds = (run["jumps"] or {}).get("seconds", 0.0)
    return seconds / max(run["wall_time"][-1] - seconds, 1e-12)


def _jump_keys(runs: list[dict[str, Any]]) -> list[str]:
    """The jump counters the runs recorded (attempted and every outcome), without calls and seconds."""
    keys = dict.fromkeys(k for run in runs for k, v in (run["jumps"] or {}).items() if isinstance(v, int))
    return [k for k in keys if k != "calls"]


def _best(runs: list[dict[str, Any]]) -> float:
    """The maximum of the runs' mean curve."""
    curve = [v for v in mean_curve([run["val_metric"] for run in runs]) if math.isfinite(v)]
    return max(curve) if curve else math.nan


def _rolled_back(jumps: dict[str, Any]) -> int:
    return sum(v for k, v in jumps.items() if k.startswith("rolled_back") and k != "rolled_back")


def _last_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else math.nan


def _call_every(method: MethodConfig, entry: EvalTask) -> int:
    """Optimizer steps between the method's nowcaster calls on a task (0: once per epoch)."""
    return method.every_steps or entry.nowcast_every_steps


def _check_jumps(
    name: str, method: MethodConfig, entry: EvalTask, nowcaster: Nowcaster, steps: int, per_epoch: int,
    where: str,
) -> None:
    """A method whose first jump would come after the run's last nowcaster call cannot speed it up.
    `steps`: the run's optimizer steps; `per_epoch`: steps per epoch."""
    every = _call_every(method, entry)
    if every:
        unit, calls = f"calls every {every} optimizer steps", steps // every
    else:
        unit, calls = "epochs", steps // per_epoch  # full epochs: the nowcaster is called at their ends
    resolved = nowcaster.config
    first = resolved.period if resolved.mode == "nowcast" else resolved.farcast_after
    if first > calls:
        setting = "period" if resolved.mode == "nowcast" else "farcast_after"
        raise ConfigError(
            f"method {name!r} on {where}: its first jump comes after {setting}={first} {unit} (the bundle's "
            f"window is {nowcaster.bundle.input_length}), but the run has only {calls}; train longer "
            "(epochs or max_steps), call the nowcaster more often (every_steps, or the task's "
            "nowcast_every_steps) or use a bundle with a shorter window"
        )


def _warm_up(config: EvalConfig, label: str) -> None:
    """One untimed epoch of the task (a few steps of a step-based one), so that first-call costs
    (kernel selection, allocator growth) do not fall on the wall-clock of whichever run comes first."""
    entry = config.speedup.tasks[label]
    warm = dataclasses.replace(
        config.train_config(label, config.speedup.seeds[0]), epochs=1,
        max_steps=min(entry.max_steps, entry.eval_every_steps or entry.max_steps),
    )
    train(warm)


def _train_run(
    config: EvalConfig, label: str, name: str, bundle: PredictorBundle | None, seed: int, lr: float, key: str,
    role: str,
) -> dict[str, Any]:
    """Train one (task, method, seed) at learning rate `lr` and return its results row; `role`:
    GRID (plain training over the lr grid) or RUN (a compared run at the chosen lr)."""
    entry = config.speedup.tasks[label]
    train_config = config.train_config(label, seed, lr)
    hook = None
    if bundle is not None:
        method = config.methods[name]
        hook = NowcastHook(
            bundle, method.nowcast, every_steps=_call_every(method, entry), probe_size=method.probe_size
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NowcastWarning)  # reported by preflight; rollbacks are counted
        result = train(train_config, hooks=[hook] if hook else [])
    history = result.history
    budget, unit = budget_of(entry)
    jumps = None
    if hook is not None:
        stats = dataclasses.asdict(hook.stats)
        jumps = {k: v for k, v in stats.items() if isinstance(v, (int, float))}  # counters and seconds
        # where each attempted jump was made, in the task's units: call c is at optimizer step
        # c x (steps per call), the end of epoch c for a nowcaster called once per epoch
        per_call = _call_every(config.methods[name], entry) or steps_per_epoch(train_config, result.task)
        per_unit = 1 if unit == "steps" else steps_per_epoch(train_config, result.task)
        jumps["at"] = [jump.call * per_call / per_unit for jump in hook.stats.jumps]
    return {
        "key": key, "task": label, "task_name": entry.task, "arch": entry.arch,
        "optimizer": entry.optimizer.name, "schedule": entry.schedule.name, "lr": lr, "role": role,
        "method": name,
        "seed": seed, "budget": budget, "unit": unit,
        "metric_name": history.metric_name, "diverged": history.diverged,
        "val_metric": history.column("val_metric"), "val_loss": history.column("val_loss"),
        "train_loss": history.column("train_loss"), "epoch": history.column("epoch"),
        "step": history.column("step"), "wall_time": history.column("wall_time"), "jumps": jumps,
    }


def _run_key(
    config: EvalConfig, label: str, name: str, seed: int, lr: float, fingerprint: str | None, role: str = RUN
) -> str:
    """16 hex digits of everything that determines a run: task entry and lr, method, bundle
    weights, seed, device, role."""
    method = None if name == PLAIN else dataclasses.asdict(config.methods[name])
    if method is not None:
        del method["revision"]  # the bundle's fingerprint (its weights) says what a revision gave
    task = dataclasses.asdict(config.speedup.tasks[label])
    for setting in ("lr_grid", "absolute_target"):  # the grid chooses the lr, which is in the key
        del task[setting]
    task["optimizer"]["lr"] = lr
    payload = {
        "task": task, "lr": lr, "method": method, "bundle": fingerprint, "seed": seed,
        "device": config.device, "role": role,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _run_line(row: dict[str, Any]) -> str:
    metric = row["val_metric"]
    best = max((v for v in metric if math.isfinite(v)), default=math.nan)
    jumps = row["jumps"]
    jumped = ""
    if jumps is not None:
        jumped = f", jumps {jumps.get('accepted', 0)} accepted / {_rolled_back(jumps)} rolled back"
    span = f"{row['step'][-1]} steps" if row["unit"] == "steps" else f"{len(metric) - 1} epochs"
    return (
        f"  {row['task']:<20} {row['method']:<16} lr {row['lr']:<8g} seed {row['seed']}: best "
        f"{row['metric_name']} {best:.4f} in {span}, {row['wall_time'][-1]:.1f} s{jumped}"
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
