"""The one tracking config and tracker (zoo.tracking) that every stage uses: `none` does nothing;
`wandb` is checked against real wandb runs in offline mode (WANDB_MODE=offline, files in a tmp
folder, no network), read back from their .wandb files; every stage's config checks
`tracking.name`; a missing login fails at start with what to do; a failing tracker call warns and
loses nothing."""

import pytest

from weightcast.configs import config_path
from weightcast.collect.config import CollectConfig, load_collect_config
from weightcast.eval.config import EvalConfig, load_eval_config
from weightcast.train_predictor.config import TrainPredictorConfig, load_train_predictor_config
from weightcast.zoo.config import ConfigError
from weightcast.zoo.tracking import (
    TRACKERS, Tracker, TrackingConfig, TrackingError, WandbTracker, artifact_name, check_wandb_login,
    make_tracker,
)
from weightcast.zoo.train import TrainConfig, train

from ..wandb_records import offline_runs


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    return tmp_path


def test_none_tracks_nothing(tmp_path):
    none = TrackingConfig()
    tracker = make_tracker(none, job_type="eval", name="x", out_dir=tmp_path, config=none)
    assert type(tracker) is Tracker and tracker.epoch_hooks() == []
    tracker.log({"a": 1})
    tracker.table("t", ["c"], [[1]])
    tracker.log_artifact("a", "t", tmp_path)
    tracker.finish()
    assert list(tmp_path.iterdir()) == []


def test_wandb_offline_run_logs_curves_tables_and_artifacts(offline, capsys):
    tmp_path = offline
    tracking = TrackingConfig(name="wandb", project="p")
    tracker = make_tracker(
        tracking, job_type="collect", name="worker-0", group="debug", out_dir=tmp_path / "out",
        config=tracking,
    )
    assert isinstance(tracker, WandbTracker)
    tracker.define_step("wnn/linear")
    tracker.log({"wnn/linear/step": 3, "wnn/linear/val_mae": None})  # None: not logged
    tracker.table("runs", ("run_id", "seconds"), [("abc", 1.5)])
    tracker.summarize({"wnn/geomean": 1.2})
    tracker.update_config({"bundle/revision": "abc123"})
    run_config = TrainConfig(task="mnist1d", arch="mlp", epochs=2, batch_size=1000)
    result = train(run_config, hooks=tracker.epoch_hooks(prefix="run/r1"))
    data = tmp_path / "index.json"
    data.write_text('{"runs": 1}')
    tracker.log_artifact("collection-debug", "collection", data)
    tracker.finish()

    consumer = make_tracker(tracking, job_type="train-predictor", name="t", group="debug",
                            out_dir=tmp_path / "out2", config=tracking)
    consumer.use_artifact("collection-debug", "collection", data)
    consumer.finish()
    assert "wandb" not in capsys.readouterr().out  # silent: no banner in a progress bar

    made, used = offline_runs(tmp_path / "out")[0], offline_runs(tmp_path / "out2")[0]
    assert (made.name, made.group, made.job_type) == ("worker-0", "debug", "collect")
    assert made.config["project"] == "p" and made.config["bundle/revision"] == "abc123"
    assert {"wnn/linear/step": 3} in made.history
    epochs = [row for row in made.history if "run/r1/epoch" in row]  # the run's own keys and x axis
    assert [row["run/r1/epoch"] for row in epochs] == [1, 2]
    assert epochs[-1]["run/r1/val_accuracy"] == pytest.approx(result.history.records[-1].val_metric)
    assert made.summary["wnn/geomean"] == 1.2
    # lineage: the same file gives the same digest, logged by one run and used by the next
    (out_artifact,) = [a for a in made.artifacts if a["type"] == "collection"]  # tables are artifacts too
    (in_artifact,) = used.artifacts
    assert (out_artifact["name"], out_artifact["used"]) == ("collection-debug", False)
    assert in_artifact["used"]
    assert out_artifact["digest"] == in_artifact["digest"] and used.group == "debug"


def test_tracking_group_wins_over_the_stage_default(offline):
    tracking = TrackingConfig(name="wandb", group="pipeline-1")
    tracker = make_tracker(tracking, job_type="eval", name="e", group="zoo", out_dir=offline / "o", config=tracking)
    tracker.finish()
    assert offline_runs(offline / "o")[0].group == "pipeline-1"


def test_missing_login_is_refused_at_start_with_what_to_do(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no login there
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TrackingError, match=r"wandb login.*WANDB_MODE=offline"):
        check_wandb_login()
    tracking = TrackingConfig(name="wandb")
    with pytest.raises(TrackingError, match="wandb login"):
        make_tracker(tracking, job_type="eval", name="e", out_dir=tmp_path / "o", config=tracking)
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_wandb_login()


def test_a_failing_wandb_call_warns_once_and_loses_nothing(offline, capsys):
    tracking = TrackingConfig(name="wandb")
    tracker = make_tracker(tracking, job_type="eval", name="e", out_dir=offline / "o", config=tracking)

    def broken(*args, **kwargs):
        raise RuntimeError("network gone")

    tracker.run.log = broken
    tracker.log({"a": 1})
    tracker.log({"a": 2})
    tracker.table("t", ["c"], [[1]])
    tracker.finish()
    err = capsys.readouterr().err
    assert err.count("warning: wandb tracking failed") == 1 and "network gone" in err


def test_artifact_names():
    assert artifact_name("bundle-train predictor/wnn:v1") == "bundle-train-predictor-wnn-v1"


@pytest.mark.parametrize(
    "load, cls, path",
    [
        (load_collect_config, CollectConfig, None),
        (load_train_predictor_config, TrainPredictorConfig, None),
        (load_eval_config, EvalConfig, config_path("eval", "debug")),
    ],
)
def test_every_stage_checks_tracking_name(load, cls, path):
    assert cls.__dataclass_fields__["tracking"].type in ("TrackingConfig", TrackingConfig)
    assert load(path, ["tracking.name=wandb"]).tracking == TrackingConfig(name="wandb")
    assert load(path, ["tracking.group=g"]).tracking.group == "g"
    with pytest.raises(ConfigError, match=r"tracking.name.*expected one of \['none', 'wandb'\]"):
        load(path, ["tracking.name=tensorboard"])
    assert TRACKERS == ("none", "wandb")
