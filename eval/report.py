"""The report of `weightcast eval` (eval stage, the last of zoo <- collect <- train_predictor <-
eval): one folder with

    report.md        the tables below, with the definitions they rest on
    report.json      the same numbers, machine-readable (NaN and inf written as null)
    curves_<task>.png  validation metric against epochs or steps, one band (mean +- std over seeds)
                     per method, the targets as horizontal lines
    speedup.png      speed-up (headline target) per task and method, and the geometric mean across tasks
    forecast.json, results.jsonl, config.yaml, meta.json   (written by the run as it goes)

Every method has one colour in every plot (`method_colors`: plain black, the others in config
order). Each column of a table has one precision: speed-ups 2 decimals, metrics 4, seconds 2,
epochs 1, steps 0, overhead 1 (percent).

Plots use matplotlib's Agg backend (no display), imported only when plotting.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from weightcast.eval.config import EvalConfig, seen_tasks
from weightcast.eval.forecast import ForecastResult
from weightcast.eval.speedup import ABSOLUTE, PLAIN, RUN, mean_curve, target_name
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.zoo.config import config_to_dict
from weightcast.zoo.rundir import git_sha, package_version, write_json_atomic

__all__ = [
    "REPORT_FILE",
    "REPORT_JSON",
    "SPEEDUP_PLOT",
    "describe_methods",
    "method_colors",
    "lr_table",
    "speedup_table",
    "task_table",
    "forecast_tables",
    "plot_curves",
    "plot_speedups",
    "write_report",
]

REPORT_FILE = "report.md"
REPORT_JSON = "report.json"
SPEEDUP_PLOT = "speedup.png"


def describe_methods(
    config: EvalConfig, bundles: dict[str, PredictorBundle], unavailable: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per configured method: its source, and for an available bundle its kind, window,
    horizon and the collection (and tasks) it was trained on; else why it is unavailable."""
    rows = []
    for name, method in config.methods.items():
        row: dict[str, Any] = {"method": name, "source": method.source(), "mode": method.nowcast.mode}
        if name in bundles:
            bundle = bundles[name]
            row.update(
                available=True, kind=bundle.kind, input_length=bundle.input_length, horizon=bundle.horizon,
                layer_types=list(bundle.layer_types),
                collection=bundle.trained_on.get("collection", "not recorded"),
                trained_on_tasks=sorted(seen_tasks(bundle)),
                revision=method.revision, commit=bundle.revision,  # asked for; the Hub commit it resolved to
            )
        else:
            row.update(available=False, reason=unavailable[name])
        rows.append(row)
    return rows


def method_colors(names: Sequence[str]) -> dict[str, str]:
    """One matplotlib colour per method, the same in every plot: plain training black, the other
    methods tab10's C0, C1, ... in the order given (the config's)."""
    colors = {PLAIN: "black"}
    for index, name in enumerate(n for n in names if n != PLAIN):
        colors[name] = f"C{index % 10}"
    return colors


def speedup_table(summary: dict[str, Any], target: str | None = None) -> str:
    """Markdown for one target (default: the headline): per method (rows) and task (columns) the
    speed-up in epochs or steps and in wall-clock (predictor's time counted), then the geometric
    means across tasks, tasks where quality was kept, jumps and overhead. Cells say when the
    target was not kept or not reached; tasks without this target (absolute) are left out."""
    target = target or summary["targets"][0]
    tasks = {label: t for label, t in summary["tasks"].items() if target in t["targets"]}
    names = [PLAIN, *summary["methods"]]
    header = [
        "method", *(f"{label} ({t['unit']} / wall)" for label, t in tasks.items()),
        "geo-mean (epochs or steps)", "geo-mean (wall-clock)", "vs the line fit (epochs or steps)",
        "quality kept (tasks)", "jumps accepted / rolled back / skipped", "overhead (mean / max)",
    ]
    lines = [_row(header), "|---|" + "---:|" * (len(tasks) + 6)]
    for name in names:
        cells = [name]
        for task in tasks.values():
            stats = task["targets"][target]["methods"].get(name)
            cells.append("-" if stats is None else _speedup_cell(stats))
        if name == PLAIN:
            cells += [_x(1.0), _x(1.0), "-", "-", "-", "-"]
        else:
            means = summary["methods"][name]
            at = means["targets"][target]
            vs = at.get("vs_line_fit", math.nan)
            cells += [
                _x(at["geomean_units"]), _x(at["geomean_wall"]), _x(vs) if math.isfinite(vs) else "-",
                f"{at['kept']}/{at['tasks']}",
                f"{means['accepted']} / {means['rolled_back']} / {means['skipped']}",
                f"{_pct(means['overhead_mean'])} / {_pct(means['overhead_max'])}",
            ]
        lines.append(_row(cells))
    return "\n".join(lines)


def lr_table(task: dict[str, Any]) -> str:
    """Markdown: the task's lr grid, plain training's best mean metric at each lr and when its mean
    curve reached the headline fraction of that best, and the chosen lr."""
    choice, unit = task["lr"], task["unit"]
    header = [
        "lr", f"plain's best mean val {task['metric_name']}", f"{unit} to {task['headline']} of it", "chosen",
    ]
    lines = [_row(header), "|---:|---:|---:|---|"]
    for lr, best, at in zip(choice["grid"], choice["best"], choice["to_target"]):
        chosen = "**chosen**" if lr == choice["chosen"] else ""
        lines.append(_row([f"{lr:g}", _num(best), _units(at, unit) if math.isfinite(at) else "-", chosen]))
    return "\n".join(lines)


def task_table(task: dict[str, Any], target: str | None = None) -> str:
    """Markdown: one task's methods at one target (default: the headline) with epochs or steps and
    seconds to target, speed-ups, best and final metric, jumps, overhead and status."""
    target = target or task["headline"]
    metric, unit = task["metric_name"], task["unit"]
    header = [
        "method", f"{unit} to target", "speed-up", "seconds to target (predictor included)",
        "speed-up (wall)", f"best {metric}", f"final {metric}",
        "jumps accepted / rolled back / skipped (all seeds)", f"first jump ({unit})", "overhead", "status",
    ]
    lines = [_row(header), "|---|" + "---:|" * 9 + "---|"]
    for name, s in task["targets"][target]["methods"].items():
        jumps = s["jumps"]
        lines.append(_row([
            name,
            f"{_units(s['units_mean'], unit)} ± {_units(s['units_std'], unit)}",
            _x(s["speedup_units"]),
            f"{_sec(s['wall_mean'])} ± {_sec(s['wall_std'])}",
            _x(s["speedup_wall"]),
            _num(s["best"]),
            f"{_num(s['final_mean'])} ± {_num(s['final_std'])}",
            "-" if name == PLAIN else f"{jumps['accepted']} / {jumps['rolled_back']} / {jumps['skipped']}",
            _units(s["first_jump"], unit) if math.isfinite(s["first_jump"]) else "-",
            "-" if name == PLAIN else _pct(s["overhead"]),
            s["status"] + (f" ({s['diverged']} diverged)" if s["diverged"] else ""),
        ]))
    return "\n".join(lines)


def forecast_tables(result: ForecastResult) -> str:
    """Markdown: one table per layer type, rows by (window, horizon), no-jump first."""
    parts = []
    columns = [
        "method", "kind", "window", "horizon", "pairs", "MSE", "MAE", "MAE / no-jump",
        "rel. distance", "rel. direction",
    ]
    for layer_type in dict.fromkeys(r.layer_type for r in result.rows):
        rows = [r for r in result.rows if r.layer_type == layer_type]
        rows.sort(key=lambda r: (r.input_length, r.horizon, r.method != "no-jump"))
        lines = [f"**{layer_type}** ({result.histories[layer_type]} parameter histories)", "",
                 _row(columns), "|---|---|" + "---:|" * 8]
        for r in rows:
            lines.append(_row([
                r.method, r.kind, str(r.input_length), str(r.horizon), str(r.pairs), _sig(r.mse), _sig(r.mae),
                _num(r.mae_vs_no_jump), _num(r.relative_distance), _num(r.relative_direction),
            ]))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) or "No layer type had histories long enough for the bundles' windows."


def plot_curves(
    task: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    colors: dict[str, str] | None = None,
) -> Path:
    """Validation metric against epochs or steps for one task (runs at the chosen lr): the mean
    over seeds of each method with a band of +- one std, and each target as a horizontal line."""
    plt = _pyplot()
    colors = colors or method_colors(list(task["methods"]))
    rows = [r for r in rows if r["lr"] == task["lr"]["chosen"] and r.get("role", RUN) == RUN]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in task["methods"]:
        runs = [r for r in rows if r["method"] == name]
        curves = [r["val_metric"] for r in runs]
        mean = np.array(mean_curve(curves))
        table = np.full((len(curves), len(mean)), np.nan)
        for line, curve in zip(table, curves):
            line[: len(curve)] = curve
        std = np.nanstd(np.where(np.isfinite(table), table, np.nan), axis=0)
        longest = max(runs, key=lambda r: len(r["val_metric"]))
        xs = np.array(longest["step"] if task["unit"] == "steps" else range(len(mean)))
        style = {"linewidth": 2, "zorder": 3} if name == PLAIN else {}
        ax.plot(xs, mean, label=name, color=colors.get(name, "gray"), **style)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.15, color=colors.get(name, "gray"), linewidth=0)
    for (name, target), linestyle in zip(task["targets"].items(), ("--", ":", "-.", (0, (1, 4)))):
        ax.axhline(target["value"], linestyle=linestyle, color="gray", linewidth=1, label=f"target {name}")
    ax.set_xlabel(task["unit"][:-1])
    ax.set_ylabel(f"val {task['metric_name']}")
    lr = task["lr"]["chosen"]
    ax.set_title(f"{task['task']}: {task['arch']} on {task['task_name']} ({task['optimizer']}, lr {lr:g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_speedups(summary: dict[str, Any], path: str | Path, colors: dict[str, str] | None = None) -> Path:
    """Bars of the speed-up (epochs or steps, headline target) that counts, per task and method,
    then the geometric mean; hatched bars did not keep quality or did not reach the target."""
    plt = _pyplot()
    names = list(summary["methods"])
    colors = colors or method_colors(names)
    headline = summary["targets"][0]
    groups = [*summary["tasks"], "geo-mean"]
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * max(len(names), 1) * 0.6), 4))
    for index, name in enumerate(names):
        values, hatches = [], []
        for task in summary["tasks"].values():
            stats = task["targets"][headline]["methods"].get(name)
            values.append(math.nan if stats is None else stats["counted_units"])
            hatches.append("" if stats is None or stats["status"] == "ok" else "//")
        values.append(summary["methods"][name]["geomean_units"])
        hatches.append("")
        positions = np.arange(len(groups)) + (index - (len(names) - 1) / 2) * width
        bars = ax.bar(positions, values, width, label=name, color=colors[name])
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylabel(f"speed-up to {headline} of plain's best (x)")
    ax.set_title("speed-up in epochs or steps over plain training (hatched: not kept / not reached)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(
    out_dir: str | Path,
    config: EvalConfig,
    methods: list[dict[str, Any]],
    forecast: ForecastResult | None,
    summary: dict[str, Any] | None,
    rows: Sequence[dict[str, Any]],
    notes: Sequence[str],
) -> dict[str, Path]:
    """Write report.md, report.json and the plots into `out_dir`; returns name -> path."""
    out = Path(out_dir)
    files: dict[str, Path] = {}
    if summary is not None:
        colors = method_colors(list(summary["methods"]))
        for label, task in summary["tasks"].items():
            name = f"curves_{_slug(label)}.png"
            files[name] = plot_curves(task, [r for r in rows if r["task"] == label], out / name, colors)
        files[SPEEDUP_PLOT] = plot_speedups(summary, out / SPEEDUP_PLOT, colors)
    data = {
        "name": config.name,
        "weightcast_version": package_version(),
        "git_sha": git_sha(),
        "config": config_to_dict(config),
        "methods": methods,
        "forecast": None if forecast is None else forecast.to_dict(),
        "speedup": summary,
        "notes": list(notes),
    }
    files[REPORT_JSON] = write_json_atomic(out / REPORT_JSON, _finite_or_null(data))
    markdown = _markdown(config, methods, forecast, summary, notes)
    files[REPORT_FILE] = out / REPORT_FILE
    files[REPORT_FILE].write_text(markdown)
    return files


def _markdown(
    config: EvalConfig, methods: list[dict[str, Any]], forecast: ForecastResult | None,
    summary: dict[str, Any] | None, notes: Sequence[str],
) -> str:
    s = config.speedup
    zero_shot = "NOT enforced (allow_seen=true)" if config.allow_seen else "enforced (held-out tasks only)"
    parts = [
        f"# weightcast eval: {config.name}",
        f"weightcast {package_version()} (git {git_sha() or 'unknown'}); config: `config.yaml`; "
        f"zero-shot: {zero_shot}.",
        "## Methods and the collections their bundles were trained on",
        _methods_table(methods),
    ]
    if forecast is not None:
        parts += [
            "## Forecast error on held-out histories",
            f"Collection `{forecast.collection}` ({forecast.path}): {forecast.runs} runs of the tasks "
            f"{', '.join(forecast.tasks)}. Per parameter tensor and window position t: window = the last "
            "`window` snapshots up to t, start = the snapshot at t (= the no-jump prediction), target = the "
            "snapshot `horizon` later. MSE and MAE are over all scalars; relative distance "
            "‖pred − target‖ / ‖target − start‖ and relative direction cos(pred − start, target − start) are "
            "computed per tensor and position, then averaged (positions where the target did not move are "
            "left out; a prediction that does not move has direction 0). No-jump is the reference row "
            "(distance 1, direction 0).",
            forecast_tables(forecast),
        ]
    if summary is not None:
        lr_rule = (
            "each task's learning rate is the best of its grid for plain training (the highest best mean "
            "validation metric over seeds; the grid and each lr's result are under the task), and every "
            "method trains with it" if s.tune_lr else "each task's learning rate is its optimizer.lr "
            "(speedup.tune_lr=false: not tuned)"
        )
        fractions = ", ".join(target_name(f) for f in [s.fraction, *s.extra_fractions])
        parts += [
            "## Training speed-up on held-out tasks",
            f"Seeds {list(s.seeds)}, the same for every method; {lr_rule}. Targets per task: {fractions} "
            "of plain training's best mean validation metric (`best − (1 − fraction)·|best|`; the first is "
            "the headline), and the task's fixed `absolute_target` where it has one. Epochs or steps to "
            "target: the first validation whose metric reaches the target; step-based tasks validate every "
            "`eval_every_steps` optimizer steps. Seconds to target: wall-clock from the start of training to "
            "that validation, evaluation and the predictor's time (snapshots, predictions, guard) included. "
            "A run that never reaches the target counts the budget (its epochs or steps, its seconds per "
            "unit × the budget). Speed-up = plain's mean / the method's mean. Overhead: the predictor's "
            "seconds over the rest of the run's, mean over seeds (and the largest run's). Quality kept: the "
            f"method's best mean metric is within {s.quality_tolerance:g} (relative) of plain's; otherwise "
            "the status is 'target not kept' and the speed-up counted in the geometric mean is min(s, 1/s) "
            "of the measured s (never above 1x). Each cell of the summaries: speed-up in epochs or steps / "
            "in wall-clock.",
        ]
        for target in summary["targets"]:
            label = f"{target} of plain's best" if target != ABSOLUTE else "the fixed absolute targets"
            headline = " (headline)" if target == summary["targets"][0] else ""
            parts += [f"### Summary at {label}{headline}", speedup_table(summary, target)]
        parts.append(f"![speed-ups]({SPEEDUP_PLOT})")
        for label, task in summary["tasks"].items():
            values = ", ".join(f"{name} {_num(t['value'])}" for name, t in task["targets"].items())
            edge = (
                " The chosen lr is at the edge of the grid: a wider grid might train plain faster."
                if task["lr"]["at_edge"] else ""
            )
            parts += [
                f"### {label}: {task['arch']} on {task['task_name']} ({task['optimizer']}, "
                f"{task['schedule']} schedule), {task['budget']} {task['unit']}",
                f"Plain training's best mean val {task['metric_name']}: {_num(task['plain_best'])}; targets: "
                f"{values}. Learning rate {task['lr']['chosen']:g}.{edge}",
                lr_table(task),
            ]
            for target, at in task["targets"].items():
                early = (
                    " Plain training reaches it before any method's first jump: no method can be faster "
                    f"in {task['unit']} here." if at["before_first_jump"] else ""
                )
                parts += [f"At the {target} target.{early}", task_table(task, target)]
            parts.append(f"![curves](curves_{_slug(label)}.png)")
    if notes:
        parts += ["## Notes", "\n".join(f"- {n}" for n in notes)]
    return "\n\n".join(parts) + "\n"


def _methods_table(methods: list[dict[str, Any]]) -> str:
    if not methods:
        return "No methods configured: plain training only."
    header = ["method", "source", "kind", "window", "horizon", "mode", "trained on (collection)", "tasks"]
    lines = [_row(header), "|---|---|---|---:|---:|---|---|---|"]
    for m in methods:
        if m["available"]:
            cells = [m["kind"], str(m["input_length"]), str(m["horizon"]), m["mode"], f"`{m['collection']}`",
                     ", ".join(m["trained_on_tasks"]) or "-"]
        else:
            cells = ["-", "-", "-", m["mode"], f"**not available**: {m['reason']}", "-"]
        at = f" at commit `{m['commit']}`" if m.get("commit") else ""  # a Hub bundle's resolved commit
        lines.append(_row([m["method"], f"`{m['source']}`{at}", *cells]))
    return "\n".join(lines)


def _speedup_cell(stats: dict[str, Any]) -> str:
    cell = f"{_x(stats['speedup_units'])} / {_x(stats['speedup_wall'])}"
    if stats["status"] == "target not kept":
        return f"{cell} (target not kept: counts {_x(stats['counted_units'])})"
    if stats["status"] != "ok":
        return f"{cell} ({stats['status']})"
    return cell


def _x(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else str(value)


def _num(value: float) -> str:
    """A metric or forecast error: 4 decimals."""
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def _sig(value: float) -> str:
    """An error whose scale varies (MSE, MAE of weights): 4 significant digits, always in the same
    form (1.054e-03), so a column has one precision (`.4g` wrote 0.0004903 beside 0.00521)."""
    return f"{value:.3e}" if math.isfinite(value) else str(value)


def _units(value: float, unit: str) -> str:
    """Epochs with 1 decimal, steps with none."""
    return f"{value:.0f}" if unit == "steps" else f"{value:.1f}"


def _sec(value: float) -> str:
    """Seconds: 2 decimals (a small task's runs take a fraction of a second)."""
    return f"{value:.2f}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _finite_or_null(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (strict JSON has no NaN or inf)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
