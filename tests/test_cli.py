"""The `weightcast` console script and `python -m weightcast.zoo`, run as a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weightcast.cli import main
from weightcast.errors import USER_ERROR_EXIT_CODE
from weightcast.train_predictor.bundle import load_bundle, save_bundle
from weightcast.train_predictor.hub import HubError
from weightcast.zoo.tasks import TASKS

DEBUG_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "zoo" / "debug.yaml")


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("weightcast ")
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "zoo" in help_text
    with pytest.raises(SystemExit):
        main(["zoo", "train", "--help"])
    assert "key.sub=value" in capsys.readouterr().out


def test_zoo_list_json(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    archs = {a["name"]: a for a in listing["architectures"]}
    assert {"mlp", "lenet5", "resnet20", "resnet32", "gru", "lstm", "causal-transformer"} <= set(archs)
    assert all(a["parameters"] > 0 for a in archs.values())
    assert {t["name"] for t in listing["tasks"]} == set(TASKS.names())
    assert {"train", "heldout"} == {t["split"] for t in listing["tasks"]}
    assert {o["name"] for o in listing["optimizers"]} == {"sgd", "adam", "adamw", "rmsprop"}


def test_zoo_train_writes_a_self_describing_run(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["zoo", "train", "--config", DEBUG_CONFIG, "train.epochs=2", f"out_dir={out}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "val accuracy" in printed
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "model.safetensors", "curve.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert "epochs: 2" in (out / "config.yaml").read_text()


def test_config_errors_exit_2_with_a_message(capsys):
    assert main(["zoo", "train", "train.arch=nope"]) == 2
    assert "unknown architecture 'nope'; valid:" in capsys.readouterr().err
    assert main(["zoo", "train", "train.optimiser.lr=1"]) == 2
    assert "unknown config key 'train.optimiser'" in capsys.readouterr().err


def test_every_weightcast_error_is_caught_once(tmp_path, monkeypatch, capsys):
    """Each stage's errors (a HubError in train-predictor, a BundleFormatError in publish, a
    ConfigError) end as one line `weightcast: error: ...` and USER_ERROR_EXIT_CODE, no traceback."""
    import weightcast.train_predictor.cli as train_predictor_cli

    def hub_down(config, command):
        raise HubError("Hub repository 'org/name' not found; check the id")

    monkeypatch.setattr(train_predictor_cli, "train_predictors", hub_down)
    assert main(["train-predictor", "steps=1"]) == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err == "weightcast: error: Hub repository 'org/name' not found; check the id\n"
    (tmp_path / "notes.txt").write_text("not a bundle")
    assert main(["publish", str(tmp_path), "--repo-id", "org/name"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.startswith("weightcast: error: folder ") and "is not a predictor bundle" in err
    assert main(["train-predictor", "steps=0"]) == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err.startswith("weightcast: error: steps must be >= 1")


def test_a_hub_error_from_the_console_script_has_no_traceback(tmp_path):
    bundle = save_bundle(load_bundle("shipped:lfd2"), tmp_path / "bundle")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "weightcast", "publish", str(bundle), "--repo-id", "org/name"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == USER_ERROR_EXIT_CODE
    assert result.stderr.startswith("weightcast: error: cannot reach the Hub for 'org/name'")
    assert "Traceback" not in result.stderr


def test_overrides_may_come_before_and_after_options(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["zoo", "train", "train.epochs=1", "--config", DEBUG_CONFIG, f"out_dir={out}", "train.seed=3"]
    assert main(argv) == 0
    config = (out / "config.yaml").read_text()
    assert "epochs: 1" in config and "seed: 3" in config
    with pytest.raises(SystemExit):
        main(["zoo", "train", "--config", DEBUG_CONFIG, "train.epochs=1", "--nope", "train.seed=3"])
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["zoo", "list", "train.seed=3"])  # zoo list takes no overrides
    assert "unrecognized arguments: train.seed=3" in capsys.readouterr().err


def test_python_dash_m_zoo():
    command = [sys.executable, "-m", "weightcast.zoo", "list"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "architectures" in out and "mnist1d" in out
