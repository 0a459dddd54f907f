"""The one tracking config and tracker (zoo.tracking) that every stage uses: `none` does nothing,
`wandb` turns each call into the wandb call it stands for (checked against a stand-in wandb
module, so no files and no network), and every stage's config checks `tracking.name`."""

import sys
import types

import pytest

from weightcast.configs import config_path
from weightcast.collect.config import CollectConfig, load_collect_config
from weightcast.eval.config import EvalConfig, load_eval_config
from weightcast.train_predictor.config import TrainPredictorConfig, load_train_predictor_config
from weightcast.zoo.config import ConfigError
from weightcast.zoo.tracking import TRACKERS, Tracker, TrackingConfig, WandbTracker, make_tracker
from weightcast.zoo.train import TrainConfig, train


class _FakeRun:
    def __init__(self, **init):
        self.init, self.logged, self.defined, self.summary, self.finished = init, [], [], {}, False

    def log(self, row):
        self.logged.append(row)

    def define_metric(self, name, step_metric):
        self.defined.append((name, step_metric))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(_FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    module.Table = lambda columns, data: ("table", columns, data)
    module.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_none_tracks_nothing(fake_wandb, tmp_path):
    none = TrackingConfig()
    tracker = make_tracker(none, job_type="eval", name="x", out_dir=tmp_path, config=none)
    assert type(tracker) is Tracker and tracker.epoch_hooks() == []
    tracker.log({"a": 1})
    tracker.table("t", ["c"], [[1]])
    tracker.finish()
    assert fake_wandb.runs == [] and list(tmp_path.iterdir()) == []


def test_wandb_tracker_makes_the_wandb_calls(fake_wandb, tmp_path):
    tracking = TrackingConfig(name="wandb", project="p")
    tracker = make_tracker(
        tracking, job_type="collect", name="worker-0", group="debug", out_dir=tmp_path / "out",
        config=tracking,
    )
    assert isinstance(tracker, WandbTracker) and (tmp_path / "out").is_dir()
    (run,) = fake_wandb.runs
    assert run.init == {
        "project": "p", "job_type": "collect", "group": "debug", "name": "worker-0",
        "dir": str(tmp_path / "out"), "config": {"name": "wandb", "project": "p"}, "reinit": "create_new",
    }  # fmt: skip
    tracker.define_step("wnn/linear")
    tracker.log({"wnn/linear/step": 3, "wnn/linear/val_mae": None})  # None: not logged
    tracker.table("runs", ("run_id", "seconds"), [("abc", 1.5)])
    tracker.image("plots/curve", tmp_path / "curve.png")
    tracker.summarize({"wnn/geomean": 1.2})
    run_config = TrainConfig(task="mnist1d", arch="mlp", epochs=2, batch_size=1000)
    result = train(run_config, hooks=tracker.epoch_hooks())
    tracker.finish()
    assert run.defined == [("wnn/linear/*", "wnn/linear/step")]
    assert run.logged[:3] == [
        {"wnn/linear/step": 3},
        {"runs": ("table", ["run_id", "seconds"], [["abc", 1.5]])},
        {"plots/curve": ("image", str(tmp_path / "curve.png"))},
    ]
    epochs = run.logged[3:]  # one row per trained epoch, from the zoo loop's hook
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert epochs[-1]["val_accuracy"] == result.history.records[-1].val_metric
    assert run.summary == {"wnn/geomean": 1.2} and run.finished


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
    with pytest.raises(ConfigError, match=r"tracking.name.*expected one of \['none', 'wandb'\]"):
        load(path, ["tracking.name=tensorboard"])
    assert TRACKERS == ("none", "wandb")
