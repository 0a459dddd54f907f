"""The eval stage: exact metric functions (targets, epochs or steps to target, speed-up, quality
kept, geometric mean, relative distance and direction), the lr grid's choice, step-level curves
(the zoo loop's step budget and their units to target), the report's columns, the protocol's
defaults, the debug config end to end (report files, finite numbers, resume), zero-shot refusal,
unavailable bundles, bad input stopping eval before any training run, and the quick start end to
end in a reduced form."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from weightcast.collect import Collection, load_collect_config, run_collection
from weightcast.eval import speedup as speedup_module
from weightcast.eval.config import check_zero_shot, load_eval_config, open_method_bundle
from weightcast.eval.cli import COMMAND, run_eval
from weightcast.eval.forecast import relative_direction, relative_distance
from weightcast.eval.quickstart import quickstart
from weightcast.eval.config import DEFAULT_LR_GRIDS, EvalTask, SpeedupConfig
from weightcast.eval.report import (
    REPORT_FILE,
    REPORT_JSON,
    SPEEDUP_PLOT,
    method_colors,
    speedup_table,
    task_table,
)
from weightcast.eval.speedup import (
    ABSOLUTE,
    GRID,
    PLAIN,
    RESULTS_FILE,
    RUN,
    counted_speedup,
    epochs_to_target,
    geometric_mean,
    mean_curve,
    lr_beyond_edge,
    mixed_sittings,
    quality_kept,
    run_speedup,
    select_lr,
    speedup,
    summarize_task,
    target_value,
    task_targets,
    units_to_target,
)
from weightcast.zoo.optim import OptimizerConfig
from weightcast.zoo.train import Hook, TrainConfig, train
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.bundle import save_bundle
from weightcast.train_predictor.predictors import LFD2, WNN
from weightcast.cli import run_command
from weightcast.zoo.config import ConfigError
from weightcast.zoo.registry import UnknownNameError
from weightcast.zoo.tasks import TASKS

from ..wandb_records import offline_runs

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "configs" / "eval" / "debug.yaml"
COLLECT_DEBUG = ROOT / "configs" / "collect" / "debug.yaml"
TINY_MLP = "{depth: 1, width: 8}"
WINE, DIGITS = "speedup.tasks.wine-mlp", "speedup.tasks.digits-mlp-sgd"  # the debug config's tasks
DEBUG_TASKS = ["wine-mlp", "digits-mlp-sgd", "breast-cancer-steps"]


# ---- metric functions, exact values -------------------------------------------------------------


def test_target_is_a_fraction_of_the_best_and_never_above_it():
    assert target_value(0.8, 0.95) == pytest.approx(0.76)
    assert target_value(-0.5, 0.9) == pytest.approx(-0.55)  # R^2 below zero: still below the best
    assert target_value(0.7, 1.0) == 0.7


def test_epochs_to_target_is_the_first_epoch_at_or_above_it():
    assert epochs_to_target([0.1, 0.5, 0.7, 0.9], 0.7) == 2
    assert epochs_to_target([0.8, 0.5], 0.7) == 0
    assert epochs_to_target([0.1, math.nan, 0.6], 0.7) is None


def test_targets_headline_fractions_and_absolute():
    # 0.99 x 0.8 = 0.792, 0.95 x 0.8 = 0.76; the fixed target as given; the headline first
    targets = task_targets(0.8, [0.99, 0.95], absolute=0.7)
    assert list(targets) == ["99%", "95%", ABSOLUTE]
    assert targets["99%"] == pytest.approx(0.792) and targets["95%"] == pytest.approx(0.76)
    assert targets[ABSOLUTE] == 0.7
    assert task_targets(-0.5, [0.99]) == {"99%": pytest.approx(-0.505)}  # R^2 below 0: below the best
    defaults = SpeedupConfig()  # the protocol is what `weightcast eval` does by default
    assert defaults.fraction == 0.99 and defaults.extra_fractions == [0.95] and defaults.tune_lr


def test_units_to_target_reads_the_steps_of_the_records():
    steps = [0, 24, 48, 72, 96]
    assert units_to_target([0.1, 0.4, 0.7, 0.8, 0.9], steps, 0.75) == 72
    assert units_to_target([0.1, 0.4, math.nan, 0.8, 0.9], steps, 0.5) == 72
    assert units_to_target([0.1, 0.4], steps, 0.5) is None


def test_speedup_quality_and_geometric_mean():
    assert speedup(6, 4) == 1.5
    assert speedup(0, 0) == 1.0
    assert quality_kept(0.8915, 0.9, 0.01) and not quality_kept(0.89, 0.9, 0.01)
    assert quality_kept(0.95, 0.9, 0.01)  # better than plain is kept
    assert counted_speedup(2.0, kept=True) == 2.0
    assert counted_speedup(2.0, kept=False) == 0.5  # claimed 2x, lost quality: counts 0.5x
    assert counted_speedup(0.8, kept=False) == 0.8
    assert geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert math.isnan(geometric_mean([]))


def test_mean_curve_ignores_runs_that_stopped():
    assert mean_curve([[0.0, 1.0, 2.0], [2.0, math.nan]]) == [1.0, 1.0, 2.0]


def _row(method, seed, curve, wall_per_epoch=1.0, accepted=0, lr=1e-3, every=1, rolled_back=0, at=None):
    jumps = None if method == PLAIN else {
        "attempted": accepted + rolled_back, "accepted": accepted, "rolled_back_guard": rolled_back,
        "rolled_back_nonfinite": 0, "calls": len(curve) - 1, "seconds": 0.1,
        "at": [float(every * (1 + i)) for i in range(accepted + rolled_back)] if at is None else at,
    }
    unit = "epochs" if every == 1 else "steps"
    return {
        "key": f"{method}-{seed}-{lr}", "task": "t", "task_name": "wine", "arch": "mlp", "optimizer": "adam",
        "lr": lr, "method": method, "seed": seed, "budget": 6 * every, "unit": unit, "metric_name": "accuracy",
        "diverged": False, "val_metric": curve, "val_loss": [0.0] * len(curve),
        "train_loss": [None] + [0.0] * (len(curve) - 1), "epoch": list(range(len(curve))),
        "step": [every * e for e in range(len(curve))],
        "wall_time": [wall_per_epoch * e for e in range(len(curve))], "jumps": jumps,
    }


def test_lr_grid_choice_by_plain_training_best_mean_over_seeds():
    rows = [
        _row(PLAIN, 0, [0.1, 0.6, 0.80], lr=3e-4), _row(PLAIN, 1, [0.1, 0.6, 0.70], lr=3e-4),  # best 0.75
        _row(PLAIN, 0, [0.1, 0.9, 0.85], lr=1e-3), _row(PLAIN, 1, [0.1, 0.7, 0.85], lr=1e-3),  # best 0.85
        _row(PLAIN, 0, [0.1, 0.95, 0.2], lr=3e-3), _row(PLAIN, 1, [0.1, 0.5, math.nan], lr=3e-3),  # 0.725
    ]
    choice = select_lr(list(reversed(rows)))  # the order of the rows does not matter
    assert choice["grid"] == [3e-4, 1e-3, 3e-3] and choice["chosen"] == 1e-3 and not choice["at_edge"]
    assert choice["best"] == pytest.approx([0.75, 0.85, 0.725])  # mean curves' maxima
    assert choice["to_target"] == [2, 2, 1]  # mean curves [.1 .6 .75], [.1 .8 .85], [.1 .725 .2]
    # the best seed alone (0.95 at 3e-3) does not choose. A tie goes to the lr whose mean curve
    # reaches 99% of the best sooner (0.1: epoch 1), then to the smaller lr.
    tie = select_lr([_row(PLAIN, 0, [0.1, 0.7, 0.8], lr=0.01), _row(PLAIN, 0, [0.1, 0.8, 0.8], lr=0.1),
                     _row(PLAIN, 0, [0.1, 0.8, 0.8], lr=0.3)])
    assert tie["chosen"] == 0.1 and not tie["at_edge"] and tie["to_target"] == [2, 1, 1]
    assert select_lr([_row(PLAIN, 0, [0.1, 0.8], lr=0.1)]) == {
        "grid": [0.1], "best": [0.8], "to_target": [1], "chosen": 0.1, "at_edge": False,
    }
    edge = select_lr([_row(PLAIN, 0, [0.1, 0.8], lr=0.1), _row(PLAIN, 0, [0.1, 0.7], lr=0.01)])
    assert edge["chosen"] == 0.1 and edge["at_edge"]
    with pytest.raises(ConfigError, match="diverged at every learning rate"):
        select_lr([_row(PLAIN, 0, [math.nan], lr=0.1)])
    # methods train at the chosen lr only; plain's runs at the other lrs are the grid's
    method = [_row("m", s, [0.1, 0.86, 0.86], lr=1e-3) for s in (0, 1)]
    summary = summarize_task(rows + method, 2, [0.99], 0.01)
    assert summary["lr"]["chosen"] == 1e-3 and summary["plain_best"] == pytest.approx(0.85)
    assert summary["methods"][PLAIN]["seeds"] == [0, 1] and summary["methods"]["m"]["units"] == [1, 1]
    grid = EvalTask(task="wine", optimizer=OptimizerConfig("sgd")).lrs(tune=True)
    assert grid == DEFAULT_LR_GRIDS["sgd"] == [0.01, 0.03, 0.1]
    assert EvalTask(task="wine", lr_grid=[0.3, 0.1]).lrs(tune=True) == [0.1, 0.3]
    assert EvalTask(task="wine", optimizer=OptimizerConfig("adam", lr=0.005)).lrs(tune=False) == [0.005]
    with pytest.raises(ConfigError, match="lr_grid"):
        EvalTask(task="wine", lr_grid=[0.0])


def test_an_lr_at_the_edge_of_its_grid_extends_it_by_the_grid_ratio():
    assert lr_beyond_edge([0.01, 0.03, 0.1], 0.1) == pytest.approx(0.1 * 0.1 / 0.03)
    assert lr_beyond_edge([0.01, 0.03, 0.1], 0.01) == pytest.approx(0.01 * 0.01 / 0.03)
    assert lr_beyond_edge([1e-3, 3e-3], 3e-3) == pytest.approx(9e-3)
    with pytest.raises(ValueError, match="not at an edge"):
        lr_beyond_edge([0.01, 0.03, 0.1], 0.03)
    with pytest.raises(ConfigError, match="extend_lr_grid"):
        SpeedupConfig(extend_lr_grid=-1)


def test_run_speedup_extends_an_edge_choice_until_it_is_inside(tmp_path, monkeypatch):
    # Plain training's best rises with the lr up to 9e-4 and falls past it (a fake training run):
    # the grid [1e-4, 3e-4] chooses its upper edge, so 9e-4 is added (the grid's ratio 3), chosen
    # at the edge again, then 2.7e-3, which loses: the choice 9e-4 is inside and the search stops.
    def best(lr):
        return 0.9 - 0.1 * abs(math.log(lr / 9e-4))

    def fake_run(config, label, name, bundle, seed, lr, key, role):
        return {**_row(name, seed, [0.1, best(lr) - 0.01, best(lr)], lr=lr), "key": key, "role": role}

    monkeypatch.setattr(speedup_module, "_train_run", fake_run)
    config = load_eval_config(DEBUG, ["speedup.seeds=[0]", f"{WINE}.lr_grid=[1e-4,3e-4]"])
    config.speedup.tasks = {"wine-mlp": config.speedup.tasks["wine-mlp"]}
    rows = run_speedup(config, {}, tmp_path, echo=lambda line: None)
    grid_rows = [row for row in rows if row["role"] == "grid"]
    assert [row["lr"] for row in grid_rows] == pytest.approx([1e-4, 3e-4, 9e-4, 2.7e-3])
    assert select_lr(grid_rows)["chosen"] == pytest.approx(9e-4) and not select_lr(grid_rows)["at_edge"]
    assert [row["lr"] for row in rows if row["role"] == "run"] == pytest.approx([9e-4])
    capped = load_eval_config(DEBUG, ["speedup.seeds=[0]", "speedup.extend_lr_grid=1", f"{WINE}.lr_grid=[1e-4,3e-4]"])
    capped.speedup.tasks = {"wine-mlp": capped.speedup.tasks["wine-mlp"]}
    (tmp_path / "capped").mkdir()
    rows = run_speedup(capped, {}, tmp_path / "capped", echo=lambda line: None)
    assert sorted({row["lr"] for row in rows}) == pytest.approx([1e-4, 3e-4, 9e-4])  # one extension only


def test_summarize_task_by_hand():
    rows = [
        _row(PLAIN, 0, [0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 1.0]),  # mean best 1.0 -> target 0.95: epoch 5
        _row(PLAIN, 1, [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0]),  # epoch 6
        _row("fast", 0, [0.1, 0.5, 0.96, 1.0, 1.0, 1.0, 1.0], accepted=2),  # epoch 2
        _row("fast", 1, [0.1, 0.5, 0.9, 0.96, 1.0, 1.0, 1.0], accepted=1),  # epoch 3
        _row("lossy", 0, [0.1, 0.96, 0.97, 0.97, 0.97, 0.97, 0.97]),  # epoch 1, best 0.97 < 0.99
        _row("lossy", 1, [0.1, 0.96, 0.97, 0.97, 0.97, 0.97, 0.97]),
        _row("never", 0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], wall_per_epoch=2.0),  # budget: 6
        _row("never", 1, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0], wall_per_epoch=2.0),  # epoch 6
    ]
    task = summarize_task(rows, budget=6, fractions=[0.95], tolerance=0.01)
    assert task["plain_best"] == 1.0 and task["target"] == pytest.approx(0.95) and task["headline"] == "95%"
    plain, fast, lossy, never = (task["methods"][m] for m in (PLAIN, "fast", "lossy", "never"))
    assert plain["units"] == [5, 6] and plain["units_mean"] == 5.5 and plain["units_std"] == 0.5
    assert plain["wall_mean"] == 5.5 and plain["speedup_units"] == 1.0
    assert fast["units"] == [2, 3] and fast["speedup_units"] == pytest.approx(2.2)
    assert fast["speedup_wall"] == pytest.approx(2.2) and fast["status"] == "ok"
    assert fast["counted_units"] == pytest.approx(2.2) and fast["jumps"]["accepted"] == 3
    assert fast["overhead"] == pytest.approx(0.1 / 5.9)  # 0.1 s of the nowcaster in a 6 s run
    assert never["overhead_max"] == pytest.approx(0.1 / 11.9) and plain["overhead"] == 0.0
    assert lossy["units_mean"] == 1.0 and lossy["speedup_units"] == 5.5
    assert lossy["status"] == "target not kept" and not lossy["quality_kept"]
    assert lossy["counted_units"] == pytest.approx(1 / 5.5)
    assert never["units"] == [6, 6] and never["reached"] == 1  # not reached: counts the budget
    assert never["wall"] == [12.0, 12.0] and never["speedup_units"] == pytest.approx(5.5 / 6)
    assert never["status"] == "target not kept"  # its mean curve peaks at 0.85
    rows += [_row("slow", seed, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9]) for seed in (0, 1)]
    lenient = summarize_task(rows, budget=6, fractions=[0.95], tolerance=0.5)["methods"]
    assert lenient["never"]["status"] == "reached by 1/2 seeds"
    assert lenient["slow"]["status"] == "not reached" and lenient["slow"]["units"] == [6, 6]
    assert lenient["slow"]["counted_units"] == pytest.approx(5.5 / 6)
    # every target at once: 99% (headline) = 0.99, 95% = 0.95, the fixed one 0.5
    three = summarize_task(rows, budget=6, fractions=[0.99, 0.95], tolerance=0.01, absolute_target=0.5)
    assert list(three["targets"]) == ["99%", "95%", ABSOLUTE] and three["headline"] == "99%"
    assert [t["value"] for t in three["targets"].values()] == pytest.approx([0.99, 0.95, 0.5])
    assert three["targets"][ABSOLUTE]["fixed"] and not three["targets"]["99%"]["fixed"]
    assert three["targets"]["99%"]["methods"][PLAIN]["units"] == [5, 6]  # 1.0 >= 0.99 at epochs 5, 6
    assert three["targets"]["99%"]["methods"]["fast"]["units"] == [3, 4]
    assert three["targets"][ABSOLUTE]["methods"][PLAIN]["units"] == [2, 2]
    assert three["methods"] is three["targets"]["99%"]["methods"]


def test_step_level_curves_to_target_by_hand():
    # a step-based task validated every 24 steps, budget 144 steps, 1.5 s per validation interval
    rows = [
        _row(PLAIN, 0, [0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 1.0], every=24, wall_per_epoch=1.5),  # 0.99: step 120
        _row(PLAIN, 1, [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0], every=24, wall_per_epoch=1.5),  # step 144
        _row("jumpy", 0, [0.1, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0], every=24, wall_per_epoch=2.0, accepted=1),  # 48
        _row("jumpy", 1, [0.1, 0.3, 0.5, 1.0, 1.0, 1.0, 1.0], every=24, wall_per_epoch=2.0, rolled_back=1),  # 72
    ]
    task = summarize_task(rows, budget=144, fractions=[0.99], tolerance=0.01, unit="steps")
    plain, jumpy = task["methods"][PLAIN], task["methods"]["jumpy"]
    assert task["unit"] == "steps" and task["budget"] == 144
    assert plain["units"] == [120, 144] and plain["units_mean"] == 132 and plain["wall"] == [7.5, 9.0]
    assert jumpy["units"] == [48, 72] and jumpy["wall"] == [4.0, 6.0]
    assert jumpy["speedup_units"] == pytest.approx(132 / 60) and jumpy["speedup_wall"] == pytest.approx(8.25 / 5)
    assert jumpy["jumps"]["accepted"] == 1 and jumpy["jumps"]["rolled_back"] == 1
    assert jumpy["first_jump"] == 24 and math.isnan(plain["first_jump"])
    assert not task["targets"]["99%"]["before_first_jump"]
    # plain reaches the target (step 24) before the method's first jump (step 120): nothing to win
    early = [_row(PLAIN, 0, [0.1, 1.0, 1.0], every=24), _row("late", 0, [0.1, 1.0, 1.0], every=24, at=[120.0])]
    assert summarize_task(early, 144, [0.99], 0.01, unit="steps")["targets"]["99%"]["before_first_jump"]
    # not reached: the budget in steps, and its seconds per step x the budget
    never = [_row(PLAIN, 0, [0.1, 1.0], every=24), _row("never", 0, [0.1, 0.2], every=24, wall_per_epoch=3.0)]
    stats = summarize_task(never, budget=144, fractions=[0.99], tolerance=0.9, unit="steps")["methods"]["never"]
    assert stats["units"] == [144] and stats["wall"] == [3.0 / 24 * 144] and stats["status"] == "not reached"


class _EpochEnds(Hook):
    def __init__(self):
        self.steps = []

    def on_epoch_end(self, state):
        self.steps.append(state.step)


def test_zoo_loop_step_budget_and_step_level_validation():
    # wine: 142 training examples, batch 32 -> 4 steps per epoch
    base = {"task": "wine", "arch": "mlp", "arch_kwargs": {"depth": 1, "width": 8}, "batch_size": 32}
    hook = _EpochEnds()
    history = train(TrainConfig(**base, max_steps=10, eval_every_steps=3), hooks=[hook]).history
    assert history.column("step") == [0, 3, 6, 9, 10]  # every 3 steps, and the budget's last step
    assert history.column("epoch") == [0, 1, 2, 3, 3]  # the epoch in progress
    assert hook.steps == [4, 8]  # full epochs only: the third is cut at step 10
    assert history.records[-1].lr == history.records[1].lr  # constant schedule
    by_epoch = train(TrainConfig(**base, max_steps=10)).history
    assert by_epoch.column("step") == [0, 4, 8, 10]  # epoch ends, then the budget's end
    # the same weights, whatever the validation cadence: validation does not touch the run
    assert by_epoch.records[-1].val_loss == pytest.approx(history.records[-1].val_loss, rel=1e-6)
    epochs = train(TrainConfig(**base, epochs=3)).history
    assert epochs.column("step") == [0, 4, 8, 12] and epochs.column("epoch") == [0, 1, 2, 3]
    assert epochs.records[2].val_loss == by_epoch.records[2].val_loss  # epoch-based: as before
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(**base, max_steps=-1)


def test_report_columns_and_one_colour_per_method():
    rows = [
        _row(PLAIN, 0, [0.1, 0.5, 0.9, 1.0], wall_per_epoch=1.25),
        _row("wnn", 0, [0.1, 0.9, 1.0, 1.0], wall_per_epoch=1.5, accepted=2, rolled_back=1),
    ]
    task = summarize_task(rows, budget=3, fractions=[0.99, 0.95], tolerance=0.01, absolute_target=0.5)
    summary = {
        "targets": list(task["targets"]), "tasks": {"t": task},
        "methods": {"wnn": {
            "targets": {name: {"tasks": 1, "geomean_units": t["methods"]["wnn"]["counted_units"],
                               "geomean_wall": t["methods"]["wnn"]["counted_wall"], "kept": 1, "reached": 1}
                        for name, t in task["targets"].items()},
            "accepted": 2, "rolled_back": 1, "skipped": 0, "overhead_mean": 0.1 / 4.4, "overhead_max": 0.1 / 4.4,
        }},
    }
    table = speedup_table(summary).splitlines()
    assert table[0] == (
        "| method | t (epochs / wall) | geo-mean (epochs or steps) | geo-mean (wall-clock) "
        "| vs the line fit (epochs or steps) | quality kept (tasks) | jumps accepted / rolled back / skipped "
        "| overhead (mean / max) |"
    )
    # 99%: plain at epoch 3 (3.75 s), wnn at epoch 2 (3.0 s): 1.50x in epochs, 1.25x in wall-clock
    assert table[3] == "| wnn | 1.50x / 1.25x | 1.50x | 1.25x | - | 1/1 | 2 / 1 / 0 | 2.3% / 2.3% |"
    summary["methods"]["wnn"]["targets"]["99%"]["vs_line_fit"] = 1.2
    assert speedup_table(summary).splitlines()[3].startswith("| wnn | 1.50x / 1.25x | 1.50x | 1.25x | 1.20x |")
    # absolute 0.5: plain at epoch 1 (1.25 s), wnn at epoch 1 (1.5 s)
    assert speedup_table(summary, ABSOLUTE).splitlines()[3].startswith("| wnn | 1.00x / 0.83x |")
    lines = task_table(task).splitlines()
    assert lines[0] == (
        "| method | epochs to target | speed-up | seconds to target (predictor included) | speed-up (wall) "
        "| best accuracy | final accuracy | jumps accepted / rolled back / skipped (all seeds) | first jump (epochs) "
        "| overhead | status |"
    )
    assert lines[2] == "| plain | 3.0 ± 0.0 | 1.00x | 3.75 ± 0.00 | 1.00x | 1.0000 | 1.0000 ± 0.0000 | - | - | - | ok |"
    assert lines[3] == (
        "| wnn | 2.0 ± 0.0 | 1.50x | 3.00 ± 0.00 | 1.25x | 1.0000 | 1.0000 ± 0.0000 | 2 / 1 / 0 | 1.0 | 2.3% | ok |"
    )
    colors = method_colors(["wnn", "linear-fit", "plp"])
    assert colors == {PLAIN: "black", "wnn": "C0", "linear-fit": "C1", "plp": "C2"}


def test_relative_distance_and_direction_by_hand():
    start, target = torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])
    pred = torch.tensor([3.0, 0.0])
    assert relative_distance(pred, target, start) == pytest.approx(0.8)  # |(0, -4)| / 5
    assert relative_direction(pred, target, start) == pytest.approx(0.6)  # (3*3 + 0*4) / (3 * 5)
    assert relative_distance(start, target, start) == 1.0  # no jump: the reference
    assert relative_direction(start, target, start) == 0.0
    assert relative_direction(target, target, start) == pytest.approx(1.0)
    assert relative_distance(pred, start, start) is None  # the target did not move: undefined
    assert relative_direction(pred, start, start) is None


@pytest.mark.slow  # builds every task of both suites (the full stdlib corpus) and checks every pair
@pytest.mark.parametrize("name", ["zero-shot.yaml", "zero-shot-gpu.yaml"])
def test_shipped_zero_shot_suites_follow_the_protocol(name):
    config = load_eval_config(ROOT / "configs" / "eval" / name)
    s, tasks = config.speedup, config.speedup.tasks
    assert s.fraction == 0.99 and s.extra_fractions == [0.95] and s.tune_lr and len(s.seeds) >= 3
    meta = {label: TASKS.metadata(entry.task) for label, entry in tasks.items()}
    assert len(tasks) >= 8 and len({m["modality"] for m in meta.values()}) >= 4
    assert {m["split"] for m in meta.values()} == {"heldout"}
    assert sum(entry.max_steps > 0 and entry.eval_every_steps > 0 for entry in tasks.values()) >= 2
    assert sum(e.optimizer.name == "sgd" and e.optimizer.momentum > 0 for e in tasks.values()) >= 2
    assert any("cosine" in entry.schedule.name for entry in tasks.values())
    assert all(entry.absolute_target is not None for entry in tasks.values())
    for entry in tasks.values():  # a grid, never one (slow) lr: 3 lrs within a decade
        grid = entry.lrs(tune=True)
        assert len(grid) == 3 and grid[-1] / grid[0] <= 10 * (1 + 1e-9), grid
    peers = {"linear-fit", "plp", "introspection", "wnn", "lfd2", "nino-mlp", "lfd2-farcast"}
    assert peers <= set(config.methods)
    bundles = {m: open_method_bundle(method) for m, method in config.methods.items()}
    assert check_zero_shot({k: e.task for k, e in tasks.items()}, bundles, False, name) == []
    speedup_module.preflight(config, bundles)  # every task builds, every method jumps within the budget


# ---- the eval stage end to end on the debug config ----------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A held-out collection (one MLP run on wine, 6 epochs) and debug-shaped WNN and LFD-2
    bundles (untrained weights; LFD-2 starts at no-jump), as the debug eval config expects."""
    root = tmp_path_factory.mktemp("eval-inputs")
    config = load_collect_config(COLLECT_DEBUG, [
        "name=test-heldout", f"out_dir={root / 'heldout'}",
        f"population=[{{arch: [mlp], arch_kwargs: [{TINY_MLP}], task: [wine], lr: [0.01], batch_size: [32], "
        "epochs: [6]}]",
    ])
    run_collection(config, progress=False, echo=lambda line: None)
    trained_on = {"collection": "test-zoo", "tasks": ["mnist1d"]}
    torch.manual_seed(0)
    save_bundle(PredictorBundle.from_predictors({"linear": WNN(input_length=3, horizon=1)},
                                                trained_on=trained_on), root / "wnn")
    save_bundle(PredictorBundle.from_predictors({"linear": LFD2(input_length=2, horizon=2, init="no-jump")},
                                                trained_on=trained_on), root / "lfd2")
    return root


def _overrides(inputs, out, *extra):
    return [
        f"out_dir={out}", f"forecast.collection={inputs / 'heldout'}",
        f"methods.wnn.bundle={inputs / 'wnn'}",
        f"methods.lfd2-nowcast.bundle={inputs / 'lfd2'}", f"methods.lfd2-farcast.bundle={inputs / 'lfd2'}",
        *extra,
    ]


@pytest.mark.slow
def test_debug_config_end_to_end_and_resume(inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    config = load_eval_config(DEBUG, _overrides(inputs, out, "speedup.tasks.wine-mlp.epochs=6",
                                                "speedup.tasks.digits-mlp-sgd.epochs=6"))
    assert config.speedup.fraction == 0.99 and config.speedup.tune_lr
    result = run_eval(config, echo=lambda line: None)

    curves = [f"curves_{label}.png" for label in DEBUG_TASKS]
    for name in (REPORT_FILE, REPORT_JSON, SPEEDUP_PLOT, *curves, "forecast.json", RESULTS_FILE, "config.yaml",
                 "meta.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / REPORT_JSON).read_text(), parse_constant=pytest.fail)  # strict JSON
    methods = ["linear-fit", "plp", "wnn", "lfd2-nowcast", "lfd2-farcast"]
    assert list(report["speedup"]["methods"]) == methods
    assert result.summary["targets"] == ["99%", "95%", ABSOLUTE]
    for label in DEBUG_TASKS:
        task = result.summary["tasks"][label]
        assert 0 < task["target"] < task["plain_best"] <= 1
        assert task["target"] == pytest.approx(task["plain_best"] * 0.99)
        assert task["lr"]["chosen"] in task["lr"]["grid"] and len(task["lr"]["best"]) == len(task["lr"]["grid"])
        for name in [PLAIN, *methods]:
            stats = task["methods"][name]
            assert len(stats["units"]) == 2  # two seeds
            for key in ("units_mean", "wall_mean", "speedup_units", "speedup_wall", "best", "final_mean"):
                assert math.isfinite(stats[key]), (label, name, key)
            if name != PLAIN:
                assert stats["jumps"]["attempted"] + stats["jumps"]["skipped"] >= 2, (label, name)  # jumps were due
    wine_lr = result.summary["tasks"]["wine-mlp"]["lr"]
    # Adam's default grid, extended past an edge choice at most twice (speedup.extend_lr_grid)
    assert wine_lr["grid"][:3] == [3e-4, 1e-3, 3e-3] or wine_lr["grid"][-3:] == [3e-4, 1e-3, 3e-3]
    assert 3 <= len(wine_lr["grid"]) <= 5 and (len(wine_lr["grid"]) == 5 or not wine_lr["at_edge"])
    assert list(result.summary["tasks"]["wine-mlp"]["targets"]) == ["99%", "95%", ABSOLUTE]
    steps = result.summary["tasks"]["breast-cancer-steps"]
    assert steps["unit"] == "steps" and steps["budget"] == 60
    assert all(u % 6 == 0 for u in steps["methods"][PLAIN]["units"])  # validated every 6 steps
    for means in result.summary["methods"].values():
        assert math.isfinite(means["geomean_units"]) and math.isfinite(means["geomean_wall"])
        line_fit = result.summary["methods"]["linear-fit"]["geomean_units"]
        assert means["vs_line_fit"] == pytest.approx(means["geomean_units"] / line_fit)
    assert result.summary["line_fit"] == "linear-fit"

    rows = result.forecast.rows
    assert {r.method for r in rows} == {"no-jump", "linear-fit", "plp", "wnn", "lfd2"}
    for row in rows:
        values = (row.mse, row.mae, row.relative_distance, row.relative_direction, row.mae_vs_no_jump)
        assert all(math.isfinite(v) for v in values), row
        if row.method == "no-jump":
            assert (row.relative_distance, row.relative_direction, row.mae_vs_no_jump) == (1.0, 0.0, 1.0)
    # one 6-epoch run: 7 snapshots; window 3, horizon 1 -> positions 2..5, per tensor
    wnn_linear = next(r for r in rows if r.method == "wnn" and r.layer_type == "linear")
    assert (wnn_linear.input_length, wnn_linear.horizon) == (3, 1)
    assert wnn_linear.pairs == 4 * result.forecast.histories["linear"]
    lfd2_horizons = sorted(r.horizon for r in rows if r.method == "lfd2" and r.layer_type == "linear")
    assert lfd2_horizons == [1, 2]

    markdown = (out / REPORT_FILE).read_text()
    assert "`test-zoo`" in markdown  # names the collection the bundles were trained on
    assert "| wine-mlp (epochs / wall) | digits-mlp-sgd (epochs / wall) | breast-cancer-steps (steps / wall) |" in markdown
    assert "### Summary at 99% of plain's best (headline)" in markdown and "| 0.001 |" in markdown
    lines = (out / RESULTS_FILE).read_text().splitlines()
    # seeds x lrs of the grids, as extended (breast-cancer-steps has one lr: no grid) + tasks x seeds
    # x (plain + methods)
    grids = [result.summary["tasks"][label]["lr"]["grid"] for label in DEBUG_TASKS[:2]]
    assert len(lines) == 2 * sum(len(grid) for grid in grids) + 3 * 2 * 6
    results = [json.loads(line) for line in lines]
    assert {r["lr"] for r in results} == {*grids[0], *grids[1]} and {3e-4, 1e-3, 3e-3, 0.01, 0.03} <= {*grids[0], *grids[1]}
    for label in DEBUG_TASKS[:2]:  # plain at the chosen lr, timed again beside the methods: the same curve
        chosen = result.summary["tasks"][label]["lr"]["chosen"]
        plain = [r for r in results if r["task"] == label and r["method"] == PLAIN and r["lr"] == chosen]
        assert sorted(r["role"] for r in plain) == ["grid", "grid", "run", "run"]
        by_seed = {}
        for r in plain:
            by_seed.setdefault(r["seed"], []).append(r["val_metric"])
        assert all(a == b for a, b in by_seed.values())

    # A run cut off mid-write leaves half a line; the next call drops it and trains nothing again.
    with open(out / RESULTS_FILE, "a") as f:
        f.write('{"key": "half a li')
    messages = []
    again = run_eval(config, echo=messages.append)
    assert f"speed-up: 0 runs trained now, {len(lines)} read from" in "\n".join(messages), messages
    assert (out / RESULTS_FILE).read_text().splitlines() == lines
    assert again.summary["methods"] == result.summary["methods"]
    assert not [n for n in again.notes if "sittings" in n]  # every compared run timed in one sitting


def test_mixed_sittings_name_the_tasks_whose_wall_clock_mixes_invocations():
    rows = [
        {"task": "a", "role": RUN, "sitting": "x"}, {"task": "a", "role": RUN, "sitting": "x"},
        {"task": "b", "role": GRID, "sitting": "z"},  # the lr grid is not compared in wall-clock
        {"task": "b", "role": RUN, "sitting": "x"}, {"task": "b", "role": RUN},  # a row from before sittings
    ]
    notes = mixed_sittings(rows)
    assert len(notes) == 1 and notes[0].startswith("wall-clock on 'b' compares runs timed in 2 sittings")
    assert mixed_sittings(rows[:3]) == []


def test_zero_shot_is_enforced(inputs, tmp_path):
    with pytest.raises(ConfigError, match="training-split task"):
        run_eval(load_eval_config(DEBUG, _overrides(inputs, tmp_path / "a", f"{WINE}.task=mnist1d")))
    assert not (tmp_path / "a").exists()
    seen = PredictorBundle.from_predictors({"linear": WNN(input_length=3, horizon=1)},
                                           trained_on={"collection": "zoo-x", "tasks": ["wine"]})
    with pytest.raises(ConfigError, match="bundle of method 'wnn' was trained on.*zoo-x"):
        check_zero_shot({"wine-mlp": "wine"}, {"wnn": seen}, allow_seen=False, where="speedup.tasks")
    tasks = {"m": "mnist1d", "w": "wine"}
    notes = check_zero_shot(tasks, {"wnn": seen}, allow_seen=True, where="speedup.tasks")
    assert len(notes) == 2 and "training-split" in notes[0] and "trained on task 'wine'" in notes[1]
    with pytest.raises(ConfigError, match="forecast.split"):
        load_eval_config(DEBUG, ["forecast.split=null"])


def test_unavailable_bundle_is_reported_or_required(inputs, tmp_path):
    missing = str(tmp_path / "no-such-bundle")
    overrides = _overrides(inputs, tmp_path / "f", "speedup.enabled=false", f"methods.wnn.bundle={missing}")
    result = run_eval(load_eval_config(DEBUG, overrides), echo=lambda line: None)
    row = next(m for m in result.methods if m["method"] == "wnn")
    assert not row["available"] and "does not exist" in row["reason"]
    assert "**not available**" in result.report.read_text()
    assert "wnn" not in {r.method for r in result.forecast.rows}
    with pytest.raises(ConfigError, match="require_bundles"):
        run_eval(load_eval_config(DEBUG, [*overrides, "require_bundles=true"]))
    shipped = load_eval_config(DEBUG, [*overrides, "methods.wnn.bundle=shipped:wnn2", "require_bundles=true"])
    with pytest.raises(ConfigError, match=r"ships no pretrained 'wnn2' bundle .*shipped: introspection, lfd2, nino-mlp, wnn\)"):
        run_eval(shipped)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["methods.wnn.nowcast.period=2"], "period=2 is shorter than the bundle's window of 3"),
        (["speedup.tasks.wine-mlp.epochs=2"], "first jump comes after period=3 epochs"),
        (["methods.plp.every_steps=0", "methods.plp.nowcast.period=20"], "first jump comes after period=20"),
        (["speedup.tasks.wine-mlp.augmentation=flip"], "augmentation 'flip'"),
    ],
    ids=["period-shorter-than-window", "never-jumps", "never-jumps-steps", "augmentation"],
)
def test_bad_input_stops_before_any_training(inputs, tmp_path, extra, match):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match=match):
        run_eval(load_eval_config(DEBUG, _overrides(inputs, out, *extra)), echo=lambda line: None)
    assert not out.exists()  # nothing half-reported


def test_bundle_without_the_models_layer_types_is_refused(inputs, tmp_path):
    conv_only = PredictorBundle.from_predictors({"conv": WNN(input_length=3, horizon=1)}, fallback={})
    save_bundle(conv_only, tmp_path / "conv-only")
    overrides = _overrides(inputs, tmp_path / "out", f"methods.wnn.bundle={tmp_path / 'conv-only'}")
    with pytest.raises(ConfigError, match="method 'wnn' on speedup.tasks.wine-mlp.*layer type 'linear'"):
        run_eval(load_eval_config(DEBUG, overrides), echo=lambda line: None)


def test_parameters_of_unknown_type_are_named_in_the_notes(inputs, tmp_path, monkeypatch):
    class Scaled(nn.Module):  # a module zoo.layer_types does not know, with a bare parameter
        def __init__(self, inner):
            super().__init__()
            self.inner, self.gain = inner, nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.inner(x) * self.gain

    build = speedup_module.build_model
    monkeypatch.setattr(speedup_module, "build_model", lambda config, task: Scaled(build(config, task)))
    config = load_eval_config(DEBUG, _overrides(inputs, tmp_path / "out"))
    notes = speedup_module.preflight(config, {"wnn": open_method_bundle(config.methods["wnn"])})
    assert any("'wnn' on 'wine-mlp'" in n and "gain" in n and "untouched" in n for n in notes), notes


def test_unknown_task_and_cli_errors(inputs, tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="unknown task 'no-such-task'; valid: .*wine"):
        load_eval_config(DEBUG, ["speedup.tasks.wine-mlp.task=no-such-task"])
    with pytest.raises(ConfigError, match="'plain' is the reference"):
        load_eval_config(DEBUG, ["methods.plain.predictor={kind: no-jump}"])
    with pytest.raises(ConfigError, match="trainable"):
        load_eval_config(DEBUG, ["methods.x.predictor={kind: wnn}"])
    code = run_command(COMMAND, ["--config", str(DEBUG), f"out_dir={tmp_path}", f"{WINE}.task=mnist1d"])
    assert code == 2 and "training-split task" in capsys.readouterr().err


# ---- the quick start, reduced -------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_end_to_end_reduced(tmp_path, monkeypatch):
    population = (
        f"population=[{{arch: [mlp], arch_kwargs: [{TINY_MLP}], task: [mnist1d], optimizer: [adam, sgd], "
        "lr: [0.003], epochs: [3], seed: [0]}]"
    )
    heldout = (
        f"population=[{{arch: [mlp], arch_kwargs: [{TINY_MLP}], task: [wine], lr: [0.01], batch_size: [32], "
        "epochs: [4]}]"
    )
    overrides = [
        f"collect.{population}", f"heldout.{heldout}",
        "train_predictor.steps=20", "train_predictor.eval_every=10", "train_predictor.checkpoint_every=20",
        "train_predictor.val_fraction=0.5",
        "eval.speedup.seeds=[0]", f"eval.{WINE}.epochs=4", f"eval.{DIGITS}.epochs=4",
    ]
    monkeypatch.setenv("WANDB_MODE", "offline")  # tracked: real offline wandb runs, no network
    result = quickstart(tmp_path / "qs", overrides=overrides, echo=lambda line: None, tracking="wandb")
    assert set(result.seconds) == {"collect", "heldout", "train_predictor", "eval"}
    # one wandb group across the stages, and the lineage zoo -> bundles -> evaluation
    runs = offline_runs(tmp_path / "qs")
    assert {r.group for r in runs} == {"quickstart"}
    assert {"collect", "train-predictor", "eval"} == {r.job_type for r in runs}
    logged = {(a["name"], a["digest"]) for r in runs for a in r.artifacts if not a["used"]}
    used = {r.job_type: {(a["name"], a["digest"]) for a in r.artifacts if a["used"]} for r in runs}
    assert {n for n, _ in used["train-predictor"]} == {"collection-quickstart-zoo"}
    assert used["train-predictor"] <= logged and used["eval"] <= logged  # the same artifact versions
    assert sorted(n for n, _ in used["eval"]) == [  # each bundle once, and the held-out collection
        "bundle-train_predictor-lfd2", "bundle-train_predictor-wnn", "collection-quickstart-heldout"
    ]
    assert Collection(tmp_path / "qs" / "collect" / "zoo").index["totals"]["runs"] == 2
    report = result.eval.report
    assert report == tmp_path / "qs" / "eval" / REPORT_FILE and report.is_file()
    methods = {m["method"]: m for m in result.eval.methods}
    assert methods["wnn"]["available"] and methods["wnn"]["collection"] == "quickstart-zoo"
    assert methods["lfd2-farcast"]["source"] == str(tmp_path / "qs" / "train_predictor" / "lfd2")
    summary = result.eval.summary
    assert list(summary["tasks"]) == DEBUG_TASKS
    assert all(math.isfinite(m["geomean_units"]) for m in summary["methods"].values())
    with pytest.raises(ConfigError, match="<stage>.key=value"):
        quickstart(tmp_path / "qs", overrides=["steps=3"])
    # The zoo itself is no held-out collection: the forecast error refuses it.
    zoo = tmp_path / "qs" / "collect" / "zoo"
    overrides = [f"out_dir={tmp_path / 'seen'}", f"forecast.collection={zoo}", "speedup.enabled=false"]
    seen = load_eval_config(DEBUG, overrides)
    with pytest.raises(ConfigError, match="no runs of split 'heldout'; its tasks: \\['mnist1d'\\]"):
        run_eval(seen, echo=lambda line: None)
