"""train_predictor's `python -m weightcast.train_predictor.compare`: bundles scored on the held-out
runs of a train-predictor config, beside no-jump and the line fit on the same windows."""

import json

import pytest

from weightcast.cli import run_command
from weightcast.collect import load_collect_config, run_collection
from weightcast.train_predictor.bundle import load_bundle
from weightcast.train_predictor.compare import COMMAND, compare_bundles, comparison_table
from weightcast.train_predictor.config import load_train_predictor_config
from weightcast.train_predictor.train import train_predictors

from .test_train_predictor import DEBUG, TINY_COLLECTION


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny debug collection and a config that trained wnn (3 in, 1 ahead), lfd2 (2 in, 1..2
    ahead) and the rule-based no-jump (3 in, 1 ahead) on it: (config overrides, bundle folders)."""
    folder = tmp_path_factory.mktemp("compare")
    (folder / "tiny.yaml").write_text(TINY_COLLECTION)
    collect = load_collect_config(folder / "tiny.yaml", [f"out_dir={folder / 'tiny'}"])
    run_collection(collect, progress=False, echo=lambda message: None)
    overrides = [
        f"collection={folder / 'tiny'}", f"out_dir={folder / 'run'}", "progress=false", "steps=5",
        "eval_every=5", "predictors=[wnn,lfd2,no-jump]",
        "predictor_kwargs.no-jump={input_length: 3, horizon: 1}",
    ]
    result = train_predictors(load_train_predictor_config(DEBUG, overrides), echo=lambda message: None)
    return overrides, result.bundles


def test_bundles_are_scored_on_the_training_validation_windows(trained):
    overrides, folders = trained
    config = load_train_predictor_config(DEBUG, overrides)
    names = {"nj": "no-jump", "wnn": "wnn", "lfd2": "lfd2"}  # bundle name -> kind
    bundles = {name: load_bundle(folders[kind]) for name, kind in names.items()}
    comparison = compare_bundles(config, bundles)
    layer_types = ("linear", "bias")  # the MLP's; the debug config fits every type present
    rows = {(r["bundle"], r["layer_type"]): r for r in comparison.rows}
    assert sorted(rows) == sorted((b, t) for b in bundles for t in layer_types)  # a row per bundle and type
    assert comparison.validation_runs == 2  # 0.2 of the 6 train-split runs of one architecture, rounded
    for layer_type in layer_types:
        for name, bundle in bundles.items():
            row = rows[name, layer_type]
            assert (row["input_length"], row["horizon"]) == (bundle.input_length, bundle.horizon)
            # The same held-out runs and window cutting as training: a bundle at its own horizon
            # (lfd2's windows there have 1 target column instead of 2, but the same draws) gets
            # the MAE train-predictor validated it with, to float rounding (float64 sums of the
            # same float32 errors, maybe summed in other batch splits: rel 1e-9 of the mean).
            for method, mae in bundle.validation[layer_type].items():
                key = name if method == bundle.kind else method
                assert row["methods"][key]["mae"] == pytest.approx(mae, rel=1e-9)
        # no-jump as a bundle is no-jump the baseline: the same windows, the same arithmetic
        nj = rows["nj", layer_type]["methods"]
        assert nj["nj"] == nj["no-jump"]
        assert rows["wnn", layer_type]["methods"]["no-jump"] == nj["no-jump"]  # same geometry, same windows
    table = comparison_table(comparison)
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| layer")]
    assert len(lines) == len(bundles) * len(layer_types)
    assert "| linear | nj | no-jump | 3 | 1 |" in table and " 1.000 |" in table


def test_horizon_override_scores_the_head_row_and_writes_json(trained, tmp_path, capsys):
    overrides, folders = trained
    out = tmp_path / "compare.json"
    argv = [
        "--config", str(DEBUG), "--bundle", f"lfd2={folders['lfd2']}", "--bundle", f"nj={folders['no-jump']}",
        "--horizon", "1", "--json", str(out), *overrides,
    ]
    assert run_command(COMMAND, argv) == 0
    report = json.loads(out.read_text())
    rows = {(r["bundle"], r["layer_type"]): r for r in report["rows"]}
    assert report["horizon"] == 1 and len(rows) == 4
    for layer_type in ("linear", "bias"):
        lfd2, nj = rows["lfd2", layer_type], rows["nj", layer_type]
        assert lfd2["horizon"] == 1 and lfd2["input_length"] == 2 and nj["input_length"] == 3
        # lfd2 reads 2 inputs: its windows (span 3) are not nj's (span 4), so its baselines are its own
        assert lfd2["methods"]["no-jump"]["mae"] > 0 and lfd2["methods"]["lfd2"]["mae"] > 0
    assert "| linear | lfd2 | lfd2 | 2 | 1 |" in capsys.readouterr().out
    # a bundle that cannot predict the horizon is refused, with the horizons it covers
    argv = ["--config", str(DEBUG), "--bundle", f"wnn={folders['wnn']}", "--horizon", "2", *overrides]
    assert run_command(COMMAND, argv) != 0
    assert "cannot predict horizon 2: it covers (1,)" in capsys.readouterr().err
