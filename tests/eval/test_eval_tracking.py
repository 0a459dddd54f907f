"""eval's integrations: wandb (real offline runs, read back from their .wandb files): the run starts
before any work, in the pipeline's group, uses the bundles as Artifacts, records their commits,
logs each speed-up run's curve as it finishes and the report's tables at the end; a missing login
stops eval before any work; a tracker that fails mid-way loses nothing. Human output: a progress
bar over all runs with the time left, per-run lines above it."""

import json

import pytest
import torch

from weightcast.cli import run_command
from weightcast.errors import USER_ERROR_EXIT_CODE
from weightcast.eval.cli import COMMAND
from weightcast.eval.speedup import RESULTS_FILE
from weightcast.train_predictor.bundle import PredictorBundle, save_bundle
from weightcast.train_predictor.predictors import WNN

from ..wandb_records import offline_runs

CONFIG = """
name: tracked
device: cpu
threads: 1
methods:
  linear-fit:
    predictor: {kind: linear-fit, input_length: 3, horizon: 1}
  wnn:
    bundle: BUNDLE
speedup:
  seeds: [0]
  tune_lr: false
  tasks:
    wine-mlp:
      task: wine
      arch: mlp
      arch_kwargs: {depth: 1, width: 8}
      optimizer: {name: adam, lr: 0.003}
      batch_size: 32
      epochs: 4
"""


@pytest.fixture
def config_file(tmp_path):
    torch.manual_seed(0)
    bundle = PredictorBundle.from_predictors(
        {"linear": WNN(input_length=3, horizon=1)}, trained_on={"collection": "zoo-a", "tasks": ["mnist1d"]}
    )
    folder = save_bundle(bundle, tmp_path / "train_predictor" / "wnn")
    path = tmp_path / "eval.yaml"
    path.write_text(CONFIG.replace("BUNDLE", str(folder)))
    return path


def test_eval_logs_live_with_lineage_and_progress(config_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert run_command(COMMAND, ["--config", str(config_file), f"out_dir={out}", "tracking.name=wandb"]) == 0
    captured = capsys.readouterr()
    # human output: the bar (stderr) counts all 3 runs with the time left; per-run lines on stdout
    assert "speed-up: 100%" in captured.err and "3/3" in captured.err and "<00:00" in captured.err
    assert captured.out.count("wine-mlp") >= 3 and "| method" in captured.out  # the table printed
    (run,) = offline_runs(out / "wandb")
    assert (run.job_type, run.group) == ("eval", "zoo-a")  # group: the bundle's collection
    (used,) = [a for a in run.artifacts if a["type"] == "predictor-bundle"]
    assert used["name"] == "bundle-train_predictor-wnn" and used["used"]  # train-predictor's name for it
    assert run.config["bundles"]["wnn"] == {
        "source": str(tmp_path / "train_predictor" / "wnn"), "revision": None, "commit": None, "kind": "wnn"
    }
    # live: each run's curve (its own keys and x axis) comes before the report's tables
    curve_rows = [i for i, row in enumerate(run.history) if any(k.endswith("/epoch") for k in row)]
    table_rows = [i for i, row in enumerate(run.history) if "speedup/_type" in row]
    assert len(curve_rows) == 3 * 5 and table_rows and max(curve_rows) < min(table_rows)  # 3 runs x 5 records
    plain = [row for row in run.history if "run/wine-mlp/plain/lr0_003/run-seed0/epoch" in row]
    results = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    (plain_row,) = [r for r in results if r["method"] == "plain"]
    assert [row["run/wine-mlp/plain/lr0_003/run-seed0/val_accuracy"] for row in plain] == pytest.approx(
        plain_row["val_metric"]
    )
    assert "wnn/geomean_speedup_units" in run.summary


def test_missing_login_stops_eval_before_any_work(config_file, tmp_path, monkeypatch, capsys):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "out"
    code = run_command(COMMAND, ["--config", str(config_file), f"out_dir={out}", "tracking.name=wandb"])
    assert code == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert "wandb login" in err and "WANDB_MODE=offline" in err and "Traceback" not in err
    assert not (out / RESULTS_FILE).exists()  # nothing trained


def test_a_tracker_failing_after_the_work_started_loses_nothing(config_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb.sdk.wandb_run as wandb_run

    def gone(self, *args, **kwargs):
        raise ConnectionError("wandb went away")

    monkeypatch.setattr(wandb_run.Run, "log", gone)
    out = tmp_path / "out"
    code = run_command(COMMAND, ["--config", str(config_file), f"out_dir={out}", "tracking.name=wandb"])
    captured = capsys.readouterr()
    assert code == 0 and "| method" in captured.out and "report:" in captured.out
    assert captured.err.count("warning: wandb tracking failed") == 1 and "wandb went away" in captured.err
    assert (out / "report.md").is_file() and len((out / RESULTS_FILE).read_text().splitlines()) == 3


def test_forecast_error_columns_have_one_precision():
    from weightcast.eval.forecast import ForecastResult, ForecastRow
    from weightcast.eval.report import forecast_tables

    rows = [
        ForecastRow("no-jump", "no-jump", "linear", 2, 1, 20, 100, 0.0004903, 0.01714, 1.0, 0.0, 1.0),
        ForecastRow("wnn", "wnn", "linear", 2, 1, 20, 100, 0.00521, 0.0119, 0.9, 0.5, 0.69428),
    ]
    table = forecast_tables(ForecastResult("c", "p", 1, ["wine"], {"linear": 5}, rows)).splitlines()
    cells = [line.split(" | ") for line in table if line.startswith("| no-jump") or line.startswith("| wnn")]
    assert [c[5:7] for c in cells] == [["4.903e-04", "1.714e-02"], ["5.210e-03", "1.190e-02"]]
    assert [c[7] for c in cells] == ["1.0000", "0.6943"]  # ratios: 4 decimals
