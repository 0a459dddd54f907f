"""The report of `weightcast eval` (eval stage, the last of zoo <- collect <- train_predictor <-
eval): one folder with

    report.md        the tables below, with the definitions they rest on
    report.json      the same numbers, machine-readable (NaN and inf written as null)
    curves_<task>.png  validation metric against epochs, one band (mean +- std over seeds) per method
    speedup.png      speed-up per task and method, and the geometric mean across tasks
    forecast.json, results.jsonl, config.yaml, meta.json   (written by the run as it goes)

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
from weightcast.eval.speedup import PLAIN, mean_curve
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.zoo.config import config_to_dict
from weightcast.zoo.rundir import git_sha, package_version, write_json_atomic

__all__ = [
    "REPORT_FILE",
    "REPORT_JSON",
    "SPEEDUP_PLOT",
    "describe_methods",
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
            )
        else:
            row.update(available=False, reason=unavailable[name])
        rows.append(row)
    return rows


def speedup_table(summary: dict[str, Any]) -> str:
    """Markdown: speed-up in epochs per method (rows) and task (columns), and the geometric
    means across tasks; cells say when the target was not kept or not reached."""
    tasks = summary["tasks"]
    names = [PLAIN, *summary["methods"]]
    header = ["method", *tasks, "geo-mean (epochs)", "geo-mean (wall-clock)", "max overhead (% of an epoch)"]
    lines = [_row(header), _rule(len(tasks), 3)]
    for name in names:
        cells = [name]
        for task in tasks.values():
            stats = task["methods"].get(name)
            cells.append("-" if stats is None else _speedup_cell(stats))
        means = summary["methods"].get(name)
        if name == PLAIN:
            cells += ["1.00x", "1.00x", "-"]
        else:
            overhead = f"{100 * means['overhead_max']:.2f}%"
            cells += [_x(means["geomean_epochs"]), _x(means["geomean_wall"]), overhead]
        lines.append(_row(cells))
    return "\n".join(lines)


def task_table(task: dict[str, Any]) -> str:
    """Markdown: one task's methods with epochs and seconds to target, speed-ups, best and final
    metric, jumps and status."""
    metric = task["metric_name"]
    header = [
        "method", "epochs to target", "speed-up", "seconds to target", "speed-up (wall)",
        f"best {metric}", f"final {metric}", "jumps accepted / rolled back (all seeds)",
        "overhead (% of an epoch)", "status",
    ]
    lines = [_row(header), "|---|" + "---:|" * 8 + "---|"]
    for name, s in task["methods"].items():
        jumps = s["jumps"]
        lines.append(_row([
            name,
            f"{s['epochs_mean']:.2f} ± {s['epochs_std']:.2f}",
            _x(s["speedup_epochs"]),
            f"{s['wall_mean']:.2f} ± {s['wall_std']:.2f}",
            _x(s["speedup_wall"]),
            _num(s["best"]),
            f"{_num(s['final_mean'])} ± {_num(s['final_std'])}",
            "-" if name == PLAIN else f"{jumps['accepted']} / {jumps['rolled_back']}",
            "-" if name == PLAIN else f"{100 * s['overhead']:.2f}%",
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
                r.method, r.kind, str(r.input_length), str(r.horizon), str(r.pairs), _num(r.mse), _num(r.mae),
                _num(r.mae_vs_no_jump), _num(r.relative_distance), _num(r.relative_direction),
            ]))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) or "No layer type had histories long enough for the bundles' windows."


def plot_curves(task: dict[str, Any], rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Validation metric against epochs for one task: the mean over seeds of each method with a
    band of +- one std, and the target as a dashed line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for index, name in enumerate(task["methods"]):
        curves = [r["val_metric"] for r in rows if r["method"] == name]
        mean = np.array(mean_curve(curves))
        table = np.full((len(curves), len(mean)), np.nan)
        for line, curve in zip(table, curves):
            line[: len(curve)] = curve
        std = np.nanstd(np.where(np.isfinite(table), table, np.nan), axis=0)
        epochs = np.arange(len(mean))
        style = {"color": "black", "linewidth": 2, "zorder": 3} if name == PLAIN else {"color": f"C{index}"}
        ax.plot(epochs, mean, label=name, **style)
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.15, color=style["color"], linewidth=0)
    ax.axhline(task["target"], linestyle="--", color="gray", linewidth=1, label="target")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {task['metric_name']}")
    ax.set_title(f"{task['task']}: {task['arch']} on {task['task_name']} ({task['optimizer']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_speedups(summary: dict[str, Any], path: str | Path) -> Path:
    """Bars of the speed-up (epochs) that counts, per task and method, then the geometric mean;
    hatched bars did not keep quality or did not reach the target."""
    plt = _pyplot()
    names = list(summary["methods"])
    groups = [*summary["tasks"], "geo-mean"]
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups) * max(len(names), 1) * 0.6), 4))
    for index, name in enumerate(names):
        values, hatches = [], []
        for task in summary["tasks"].values():
            stats = task["methods"].get(name)
            values.append(math.nan if stats is None else stats["counted_epochs"])
            hatches.append("" if stats is None or stats["status"] == "ok" else "//")
        values.append(summary["methods"][name]["geomean_epochs"])
        hatches.append("")
        positions = np.arange(len(groups)) + (index - (len(names) - 1) / 2) * width
        bars = ax.bar(positions, values, width, label=name, color=f"C{index}")
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, ha="right")
    ax.set_ylabel("speed-up in epochs to target (x)")
    ax.set_title("speed-up over plain training (hatched: not kept / not reached)")
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
        for label, task in summary["tasks"].items():
            name = f"curves_{_slug(label)}.png"
            files[name] = plot_curves(task, [r for r in rows if r["task"] == label], out / name)
        files[SPEEDUP_PLOT] = plot_speedups(summary, out / SPEEDUP_PLOT)
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
        parts += [
            "## Training speed-up on held-out tasks",
            f"Seeds {list(s.seeds)}, the same for every method. Target per task: {s.fraction} of plain "
            "training's best mean validation metric (`best − (1 − fraction)·|best|`), or the task's fixed "
            "target. Epochs / seconds to target: the first epoch whose metric reaches the target, seconds "
            "including evaluation and the predictor's time; a run that never reaches it counts the budget "
            "(its epochs, its seconds per epoch × epochs). Speed-up = plain's mean / the method's mean. "
            f"Quality kept: the method's best mean metric is within {s.quality_tolerance:g} (relative) of "
            "plain's; otherwise the status is 'target not kept' and the speed-up counted in the geometric "
            "mean is min(s, 1/s) of the measured s (never above 1x).",
            "### Summary (speed-up in epochs to target; geometric means over tasks)",
            speedup_table(summary),
            f"![speed-ups]({SPEEDUP_PLOT})",
        ]
        for label, task in summary["tasks"].items():
            fixed = " (fixed)" if task["target_fixed"] else ""
            parts += [
                f"### {label}: {task['arch']} on {task['task_name']} ({task['optimizer']}), "
                f"{task['budget']} epochs",
                f"Plain training's best mean val {task['metric_name']}: {_num(task['plain_best'])}; "
                f"target{fixed}: {_num(task['target'])}.",
                task_table(task),
                f"![curves](curves_{_slug(label)}.png)",
            ]
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
        lines.append(_row([m["method"], f"`{m['source']}`", *cells]))
    return "\n".join(lines)


def _speedup_cell(stats: dict[str, Any]) -> str:
    cell = _x(stats["speedup_epochs"])
    if stats["status"] == "target not kept":
        return f"{cell} (target not kept: counts {_x(stats['counted_epochs'])})"
    if stats["status"] != "ok":
        return f"{cell} ({stats['status']})"
    return cell


def _x(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else str(value)


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _rule(tasks: int, extra: int) -> str:
    return "|---|" + "---:|" * (tasks + extra)


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
