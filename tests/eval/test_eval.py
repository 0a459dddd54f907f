"""The eval stage: exact metric functions (epochs to target, speed-up, quality kept, geometric mean,
relative distance and direction), the debug config end to end (report files, finite numbers,
resume), zero-shot refusal, unavailable bundles, bad input stopping eval before any training run,
and the quick start end to end in a reduced form."""

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
from weightcast.eval.report import REPORT_FILE, REPORT_JSON, SPEEDUP_PLOT
from weightcast.eval.speedup import (
    PLAIN,
    RESULTS_FILE,
    counted_speedup,
    epochs_to_target,
    geometric_mean,
    mean_curve,
    quality_kept,
    speedup,
    summarize_task,
    target_value,
)
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.bundle import save_bundle
from weightcast.train_predictor.predictors import LFD2, WNN
from weightcast.cli import run_command
from weightcast.zoo.config import ConfigError
from weightcast.zoo.registry import UnknownNameError

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "configs" / "eval" / "debug.yaml"
COLLECT_DEBUG = ROOT / "configs" / "collect" / "debug.yaml"
TINY_MLP = "{depth: 1, width: 8}"
WINE, DIGITS = "speedup.tasks.wine-mlp", "speedup.tasks.digits-mlp-sgd"  # the debug config's tasks


# ---- metric functions, exact values -------------------------------------------------------------


def test_target_is_a_fraction_of_the_best_and_never_above_it():
    assert target_value(0.8, 0.95) == pytest.approx(0.76)
    assert target_value(-0.5, 0.9) == pytest.approx(-0.55)  # R^2 below zero: still below the best
    assert target_value(0.7, 1.0) == 0.7


def test_epochs_to_target_is_the_first_epoch_at_or_above_it():
    assert epochs_to_target([0.1, 0.5, 0.7, 0.9], 0.7) == 2
    assert epochs_to_target([0.8, 0.5], 0.7) == 0
    assert epochs_to_target([0.1, math.nan, 0.6], 0.7) is None


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


def _row(method, seed, curve, wall_per_epoch=1.0, accepted=0):
    jumps = None if method == PLAIN else {
        "attempted": accepted, "accepted": accepted, "rolled_back_guard": 0, "rolled_back_nonfinite": 0,
        "calls": len(curve) - 1, "seconds": 0.1,
    }
    return {
        "key": f"{method}-{seed}", "task": "t", "task_name": "wine", "arch": "mlp", "optimizer": "adam",
        "method": method, "seed": seed, "epochs": 6, "metric_name": "accuracy", "diverged": False,
        "val_metric": curve, "val_loss": [0.0] * len(curve), "train_loss": [None] + [0.0] * (len(curve) - 1),
        "wall_time": [wall_per_epoch * e for e in range(len(curve))], "jumps": jumps,
    }


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
    task = summarize_task(rows, budget=6, fraction=0.95, tolerance=0.01)
    assert task["plain_best"] == 1.0 and task["target"] == pytest.approx(0.95)
    plain, fast, lossy, never = (task["methods"][m] for m in (PLAIN, "fast", "lossy", "never"))
    assert plain["epochs"] == [5, 6] and plain["epochs_mean"] == 5.5 and plain["epochs_std"] == 0.5
    assert plain["wall_mean"] == 5.5 and plain["speedup_epochs"] == 1.0
    assert fast["epochs"] == [2, 3] and fast["speedup_epochs"] == pytest.approx(2.2)
    assert fast["speedup_wall"] == pytest.approx(2.2) and fast["status"] == "ok"
    assert fast["counted_epochs"] == pytest.approx(2.2) and fast["jumps"]["accepted"] == 3
    assert fast["overhead"] == pytest.approx(0.1 / 5.9)  # 0.1 s of the nowcaster in a 6 s run
    assert never["overhead_max"] == pytest.approx(0.1 / 11.9) and plain["overhead"] == 0.0
    assert lossy["epochs_mean"] == 1.0 and lossy["speedup_epochs"] == 5.5
    assert lossy["status"] == "target not kept" and not lossy["quality_kept"]
    assert lossy["counted_epochs"] == pytest.approx(1 / 5.5)
    assert never["epochs"] == [6, 6] and never["reached"] == 1  # not reached: counts the budget
    assert never["wall"] == [12.0, 12.0] and never["speedup_epochs"] == pytest.approx(5.5 / 6)
    assert never["status"] == "target not kept"  # its mean curve peaks at 0.85
    rows += [_row("slow", seed, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9]) for seed in (0, 1)]
    lenient = summarize_task(rows, budget=6, fraction=0.95, tolerance=0.5)["methods"]
    assert lenient["never"]["status"] == "reached by 1/2 seeds"
    assert lenient["slow"]["status"] == "not reached" and lenient["slow"]["epochs"] == [6, 6]
    assert lenient["slow"]["counted_epochs"] == pytest.approx(5.5 / 6)
    fixed = summarize_task(rows, budget=6, fraction=0.95, tolerance=0.01, target=0.5)
    assert fixed["target"] == 0.5 and fixed["methods"][PLAIN]["epochs"] == [2, 2]


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


def test_debug_config_end_to_end_and_resume(inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    config = load_eval_config(DEBUG, _overrides(inputs, out, "speedup.tasks.wine-mlp.epochs=6",
                                                "speedup.tasks.digits-mlp-sgd.epochs=6"))
    result = run_eval(config, echo=lambda line: None)

    for name in (REPORT_FILE, REPORT_JSON, SPEEDUP_PLOT, "curves_wine-mlp.png", "curves_digits-mlp-sgd.png",
                 "forecast.json", RESULTS_FILE, "config.yaml", "meta.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / REPORT_JSON).read_text(), parse_constant=pytest.fail)  # strict JSON
    methods = ["linear-fit", "plp", "wnn", "lfd2-nowcast", "lfd2-farcast"]
    assert list(report["speedup"]["methods"]) == methods
    for label in ("wine-mlp", "digits-mlp-sgd"):
        task = result.summary["tasks"][label]
        assert 0 < task["target"] < task["plain_best"] <= 1
        for name in [PLAIN, *methods]:
            stats = task["methods"][name]
            assert len(stats["epochs"]) == 2  # two seeds
            for key in ("epochs_mean", "wall_mean", "speedup_epochs", "speedup_wall", "best", "final_mean"):
                assert math.isfinite(stats[key]), (label, name, key)
            if name != PLAIN:
                assert stats["jumps"]["attempted"] >= 2, (label, name)  # every method jumped
    for means in result.summary["methods"].values():
        assert math.isfinite(means["geomean_epochs"]) and math.isfinite(means["geomean_wall"])

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
    assert "| wine-mlp | digits-mlp-sgd | geo-mean (epochs)" in markdown
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert len(lines) == 2 * 6 * 2  # tasks x (plain + 5 methods) x seeds

    # A run cut off mid-write leaves half a line; the next call drops it and trains nothing again.
    with open(out / RESULTS_FILE, "a") as f:
        f.write('{"key": "half a li')
    messages = []
    again = run_eval(config, echo=messages.append)
    assert any("24 runs" in m and "24 already" in m for m in messages), messages
    assert (out / RESULTS_FILE).read_text().splitlines() == lines
    assert again.summary["methods"] == result.summary["methods"]


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
    with pytest.raises(ConfigError, match=r"ships no pretrained 'wnn2' bundle .*shipped: introspection, lfd2, wnn\)"):
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


def test_quickstart_end_to_end_reduced(tmp_path):
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
    result = quickstart(tmp_path / "qs", overrides=overrides, echo=lambda line: None)
    assert set(result.seconds) == {"collect", "heldout", "train_predictor", "eval"}
    assert Collection(tmp_path / "qs" / "collect" / "zoo").index["totals"]["runs"] == 2
    report = result.eval.report
    assert report == tmp_path / "qs" / "eval" / REPORT_FILE and report.is_file()
    methods = {m["method"]: m for m in result.eval.methods}
    assert methods["wnn"]["available"] and methods["wnn"]["collection"] == "quickstart-zoo"
    assert methods["lfd2-farcast"]["source"] == str(tmp_path / "qs" / "train_predictor" / "lfd2")
    summary = result.eval.summary
    assert list(summary["tasks"]) == ["wine-mlp", "digits-mlp-sgd"]
    assert all(math.isfinite(m["geomean_epochs"]) for m in summary["methods"].values())
    with pytest.raises(ConfigError, match="<stage>.key=value"):
        quickstart(tmp_path / "qs", overrides=["steps=3"])
    # The zoo itself is no held-out collection: the forecast error refuses it.
    zoo = tmp_path / "qs" / "collect" / "zoo"
    overrides = [f"out_dir={tmp_path / 'seen'}", f"forecast.collection={zoo}", "speedup.enabled=false"]
    seen = load_eval_config(DEBUG, overrides)
    with pytest.raises(ConfigError, match="no runs of split 'heldout'; its tasks: \\['mnist1d'\\]"):
        run_eval(seen, echo=lambda line: None)
