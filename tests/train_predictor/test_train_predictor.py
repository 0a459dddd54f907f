"""train_predictor's `weightcast train-predictor`: the webdataset window pipeline (exact windows,
held-out runs, splitting across ranks, a collection served over HTTP), the fit loop's checkpoints
and resume, the debug config's bundles, torchrun with 2 CPU processes, and the errors."""

import functools
import json
import math
import os
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from weightcast.collect import Collection, load_collect_config, run_collection
from weightcast.train_predictor.bundle import PredictorBundle
from weightcast.train_predictor.cli import COMMAND
from weightcast.train_predictor.config import load_train_predictor_config
from weightcast.train_predictor.data import (
    WindowSpec,
    cut_windows,
    open_collection,
    select_runs,
    split_runs,
    train_batches,
    validation_windows,
)
from weightcast.train_predictor.fit import FitSettings, NoTrainingData, evaluate, fit, latest_checkpoint
from weightcast.train_predictor.predictors import build_predictor
from weightcast.train_predictor.train import train_predictors
from weightcast.cli import run_command
from weightcast.zoo.config import ConfigError
from weightcast.zoo.optim import OptimizerConfig, ScheduleConfig
from weightcast.zoo.registry import UnknownNameError

from ..http_folder import serve_folder
from ..wandb_records import offline_runs

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "configs" / "train_predictor" / "debug.yaml"

# 8 tiny runs on the synthetic regressions (train split) and one on wine (held-out split); 13
# snapshots each; small shards so that each layer type has several.
TINY_COLLECTION = """
name: tiny
population:
  - arch: [mlp]
    arch_kwargs: [{depth: 1, width: 8}]
    task: [syn1, syn2]
    optimizer: [adam, sgd]
    lr: [0.01]
    batch_size: [16]
    epochs: [12]
    seed: [0, 1]
  - arch: [mlp]
    arch_kwargs: [{depth: 1, width: 8}]
    task: [wine]
    optimizer: [sgd]
    lr: [0.01]
    batch_size: [32]
    epochs: [12]
record:
  shard_size: 4KB
engine:
  workers: 1
"""


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("collection")
    config_path = folder / "tiny.yaml"
    config_path.write_text(TINY_COLLECTION)
    config = load_collect_config(config_path, [f"out_dir={folder / 'tiny'}"])
    run_collection(config, progress=False, echo=lambda message: None)
    return str(folder / "tiny")


def _debug_overrides(collection: str, out_dir: Path, *extra: str) -> list[str]:
    return [f"collection={collection}", f"out_dir={out_dir}", "progress=false", *extra]


def _lookup(collection: str, layer_type: str, spec: WindowSpec) -> dict[tuple, list[tuple]]:
    """Every window of every history: input values -> [(run_id, param_index, target values)]."""
    table: dict[tuple, list[tuple]] = defaultdict(list)
    for history in Collection(collection).histories(layer_type):
        flat = history.values.reshape(history.values.shape[0], -1)
        for t in range(spec.input_length - 1, flat.shape[0] - max(spec.horizons)):
            for s in range(flat.shape[1]):
                inputs = tuple(flat[t - spec.input_length + 1 : t + 1, s].tolist())
                targets = tuple(flat[[t + h for h in spec.horizons], s].tolist())
                table[inputs].append((history.run_id, history.param_index, targets))
    return table


def _sources(table: dict, inputs: torch.Tensor, targets: torch.Tensor) -> set[tuple[str, int]]:
    """The (run, parameter) histories a window can come from; asserts its targets are exact."""
    candidates = table[tuple(inputs.tolist())]
    found = {(run, index) for run, index, future in candidates if future == tuple(targets.tolist())}
    assert found, f"window {inputs.tolist()} -> {targets.tolist()} is not in any history"
    return found


def test_cut_windows_takes_inputs_and_futures_of_one_scalar():
    values = torch.arange(10 * 6, dtype=torch.float32).reshape(10, 2, 3)  # (T, 2, 3): value = 6 t + s
    spec = WindowSpec(input_length=3, horizons=(1, 4))
    windows = cut_windows(values, spec, 20, torch.Generator().manual_seed(0))
    assert windows.inputs.shape == (20, 3) and windows.targets.shape == (20, 2)
    s = windows.inputs[:, 0] % 6
    t = windows.inputs[:, 2] // 6  # time of the last input
    assert torch.equal(windows.inputs, 6 * (t[:, None] + torch.tensor([-2.0, -1.0, 0.0])) + s[:, None])
    assert torch.equal(windows.targets, 6 * (t[:, None] + torch.tensor([1.0, 4.0])) + s[:, None])
    assert t.min() >= 2 and t.max() <= 5  # the valid times: 2 .. T-1-4
    assert len(cut_windows(values, spec, 1000, torch.Generator())) == 4 * 6  # at most one per (time, scalar)
    assert len(cut_windows(values[:6], spec, 10, torch.Generator())) == 0  # 6 < span 7
    values[4, 1, 2] = math.nan  # windows touching it are dropped
    cut = cut_windows(values, spec, 24, torch.Generator().manual_seed(1))
    assert cut.inputs.isfinite().all() and cut.targets.isfinite().all() and 0 < len(cut) < 24


@pytest.mark.parametrize("num_workers", [0, 2])
def test_train_batches_are_exact_windows_of_training_runs(collection, num_workers):
    source = open_collection(collection)
    runs = select_runs(source, split="train", statuses=["complete"])
    assert {r["task"] for r in runs} == {"syn1", "syn2"}  # wine is a held-out task
    train_ids, val_ids = split_runs(runs, by="run", fraction=0.25, seed=0)
    spec = WindowSpec.of(build_predictor("lfd2", input_length=4, horizon=3))  # horizons 1, 2, 3
    table = _lookup(collection, "linear", spec)
    batches = list(
        train_batches(
            source, "linear", train_ids, spec, batch_size=32, windows_per_history=16,
            shuffle_buffer=64, num_batches=30, seed=0, num_workers=num_workers,
        )
    )
    assert len(batches) == 30 * max(num_workers, 1)  # with_epoch: per process (per worker)
    seen = set()
    for inputs, targets in batches:
        assert inputs.shape[1:] == (4,) and targets.shape[1:] == (3,) and 0 < len(inputs) <= 32
        assert inputs.dtype == targets.dtype == torch.float32
        for i in range(len(inputs)):
            runs_of_window = {run for run, _ in _sources(table, inputs[i], targets[i])}
            assert runs_of_window & train_ids  # (a dead unit's constant window can be in several runs)
            if len(runs_of_window) == 1:
                seen |= runs_of_window
    assert seen == train_ids  # the stream repeats over every training run


def test_ranks_read_disjoint_histories(collection, monkeypatch):
    source = open_collection(collection)
    runs = select_runs(source, split="train", statuses=["complete"])
    run_ids = {r["run_id"] for r in runs}
    spec = WindowSpec(input_length=3, horizons=(2,))
    table = _lookup(collection, "bias", spec)
    assert len(source.shard_urls("bias", run_ids)) == 5
    for world in (2, 8):  # 5 shards: split by shard for 2 ranks, by sample for 8
        per_rank = []
        for rank in range(world):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            stream = train_batches(
                source, "bias", run_ids, spec, batch_size=16, windows_per_history=8,
                shuffle_buffer=32, num_batches=40, seed=3,
            )
            histories = set()
            for inputs, targets in stream:
                assert len(inputs) > 0
                for i in range(len(inputs)):
                    found = _sources(table, inputs[i], targets[i])
                    if len(found) == 1:
                        histories |= found
            per_rank.append(histories)
        for a in range(world):
            for b in range(a + 1, world):
                assert not per_rank[a] & per_rank[b], (world, a, b)
        assert len(set().union(*per_rank)) == sum(len(h) for h in per_rank) > 0


def test_validation_runs_are_held_out_whole(collection):
    source = open_collection(collection)
    runs = select_runs(source, split="train", statuses=["complete"])
    all_ids = {r["run_id"] for r in runs}
    train_ids, val_ids = split_runs(runs, by="run", fraction=0.25, seed=0)
    assert not train_ids & val_ids and train_ids | val_ids == all_ids and len(val_ids) == 2
    assert split_runs(runs, by="run", fraction=0.25, seed=0) == (train_ids, val_ids)
    train_t, val_t = split_runs(runs, by="task", fraction=0.5, seed=0)
    val_tasks = {r["task"] for r in runs if r["run_id"] in val_t}
    assert len(val_tasks) == 1 and not val_tasks & {r["task"] for r in runs if r["run_id"] in train_t}
    _, val_syn1 = split_runs(runs, by="task", fraction=0.5, holdout=["syn1"])
    assert val_syn1 == {r["run_id"] for r in runs if r["task"] == "syn1"}

    spec = WindowSpec(input_length=3, horizons=(1,))
    table = _lookup(collection, "linear", spec)
    cut = functools.partial(validation_windows, source, "linear", val_ids, spec, windows_per_history=64)
    val = cut(max_windows=100, seed=0)
    assert len(val) == 100  # a uniform sample capped at max_windows
    again = cut(max_windows=100, seed=0)
    assert torch.equal(val.inputs, again.inputs) and torch.equal(val.targets, again.targets)  # fixed
    for i in range(len(val)):
        assert {run for run, _ in _sources(table, val.inputs[i], val.targets[i])} & val_ids


def test_collection_over_http_reads_the_same_windows(collection):
    with serve_folder(collection) as url:
        remote = open_collection(f"{url}/")
        local = open_collection(collection)
        assert remote.index == local.index and remote.runs == local.runs
        ids = {r["run_id"] for r in local.runs}
        spec = WindowSpec(input_length=2, horizons=(3,))
        a = validation_windows(remote, "bias", ids, spec, windows_per_history=8, max_windows=1000, seed=1)
        b = validation_windows(local, "bias", ids, spec, windows_per_history=8, max_windows=1000, seed=1)
        assert len(a) > 0 and torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_debug_config_trains_bundles_that_load_back(collection, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    overrides = _debug_overrides(
        collection, out, "steps=30", "eval_every=10", "checkpoint_every=10", "tracking.name=wandb"
    )
    monkeypatch.setenv("WANDB_MODE", "offline")  # real wandb, files under out/wandb, no network
    assert run_command(COMMAND, ["--config", str(DEBUG), *overrides]) == 0
    captured = capsys.readouterr()
    assert "wandb" not in captured.err  # silent: nothing printed into the progress bars
    (run,) = offline_runs(out / "wandb")  # lineage: the collection in, one artifact per bundle out
    assert (run.job_type, run.group) == ("train-predictor", "tiny")  # group: the collection's name
    used = [(a["name"], a["used"]) for a in run.artifacts if a["type"] == "collection"]
    assert used == [("collection-tiny", True)]
    bundles = [a for a in run.artifacts if a["type"] == "predictor-bundle"]
    assert [a["name"] for a in bundles] == ["bundle-run-wnn", "bundle-run-lfd2"]
    assert [a["metadata"]["kind"] for a in bundles] == ["wnn", "lfd2"]
    card = (out / "wnn" / "README.md").read_text()  # both stages' configs embedded in the card
    assert "weightcast collect --config collect.yaml" in card and "population:" in card and "steps: 30" in card
    printed = captured.out
    assert "wnn          linear" in printed and "no-jump" in printed
    report = json.loads((out / "validation.json").read_text())
    config = load_train_predictor_config(DEBUG, overrides)
    source = open_collection(collection)
    _, val_ids = split_runs(select_runs(source, split="train", statuses=["complete"]), by="run", fraction=0.2)
    for kind in ("wnn", "lfd2"):
        bundle = PredictorBundle.from_pretrained(out / kind)
        assert bundle.kind == kind and bundle.layer_types == ("linear", "bias")
        assert bundle.fallback == {"conv": "linear", "norm": "bias", "embedding": "linear"}
        kwargs = config.predictor_kwargs[kind]
        assert (bundle.input_length, bundle.horizon) == (kwargs["input_length"], kwargs["horizon"])
        assert bundle.trained_on["collection"] == "tiny" and bundle.trained_on["tasks"] == ["syn1", "syn2"]
        assert bundle.trained_on["runs"] == 6 and bundle.trained_on["trajectories"] == 24
        assert bundle.commands[0] == f"weightcast collect --config {config.collection}/config.yaml"
        assert bundle.commands[1].startswith(f"weightcast train-predictor --config {DEBUG}")
        for layer_type in bundle.layer_types:
            row = bundle.validation[layer_type]
            assert set(row) == {kind, "no-jump", "linear-fit"} and all(v > 0 for v in row.values())
            # The exported weights are the validated ones: their error on the same windows matches.
            predictor = bundle.predictor_for(layer_type)
            windows = validation_windows(
                source, layer_type, val_ids, WindowSpec.of(predictor),
                windows_per_history=config.val_windows_per_history, max_windows=config.max_val_windows,
            )
            assert len(windows) == report["validation"][kind][layer_type]["windows"]
            assert evaluate(predictor, windows)["mae"] == pytest.approx(row[kind], rel=1e-5)
            nojump = build_predictor("no-jump", input_length=bundle.input_length, horizon=bundle.horizon)
            horizons = WindowSpec.of(predictor).horizons
            assert evaluate(nojump, windows, horizons=horizons)["mae"] == pytest.approx(row["no-jump"], rel=1e-9)
            # no-jump is scored at the bundle's horizon, not at the windows' first target column
            last_to_target = windows.targets[:, horizons.index(bundle.horizon)] - windows.inputs[:, -1]
            assert row["no-jump"] == pytest.approx(last_to_target.abs().double().mean().item(), rel=1e-6)
    # The best checkpoint by validation loss is the one exported.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    wnn_linear = [r for r in rows if (r["kind"], r["layer_type"]) == ("wnn", "linear")]
    assert [r["step"] for r in wnn_linear] == [0, 10, 20, 30]
    best = min(wnn_linear, key=lambda r: r["val_loss"])
    exported = report["validation"]["wnn"]["linear"]
    assert exported["best_step"] == best["step"]
    assert exported["methods"]["wnn"]["loss"] == pytest.approx(best["val_loss"], rel=1e-6)


def test_rule_based_kind_makes_a_bundle_without_fitting(collection, tmp_path):
    overrides = ["predictors=[no-jump]", "predictor_kwargs.no-jump={input_length: 3, horizon: 2}"]
    config = load_train_predictor_config(DEBUG, _debug_overrides(collection, tmp_path, *overrides))
    result = train_predictors(config, echo=lambda message: None)
    bundle = PredictorBundle.from_pretrained(result.bundles["no-jump"])
    assert (bundle.input_length, bundle.horizon) == (3, 2) and bundle.layer_types == ("linear", "bias")
    assert not (tmp_path / "checkpoints").exists()
    for row in bundle.validation.values():
        assert set(row) == {"no-jump", "linear-fit"}


def _fit_setup(collection: str):
    source = open_collection(collection)
    runs = select_runs(source, split="train", statuses=["complete"])
    train_ids, val_ids = split_runs(runs, by="run", fraction=0.25)
    torch.manual_seed(0)
    predictor = build_predictor("wnn", input_length=3, horizon=2)
    spec = WindowSpec.of(predictor)
    val = validation_windows(source, "linear", val_ids, spec, windows_per_history=32, max_windows=500)

    def make_batches(start):
        return train_batches(
            source, "linear", train_ids, spec, batch_size=32, windows_per_history=16,
            shuffle_buffer=64, num_batches=1000, seed=(0, start),
        )

    return predictor, make_batches, val


def test_fit_resumes_from_the_latest_checkpoint_after_a_crash(collection, tmp_path):
    predictor, make_batches, val = _fit_setup(collection)
    settings = FitSettings(steps=40, eval_every=5, checkpoint_every=10)
    logged = []

    def crash_at_25(row):
        logged.append(row)
        if row["step"] == 25:
            raise KeyboardInterrupt  # a kill between checkpoints 20 and 30

    with pytest.raises(KeyboardInterrupt):
        fit(predictor, make_batches, val, settings, tmp_path, fingerprint={"a": 1}, log=crash_at_25)
    assert latest_checkpoint(tmp_path).name == "step-00000020"
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000020"]  # older checkpoints are deleted
    (tmp_path / ".tmp-step-00000030-1").mkdir()  # a checkpoint that a kill left half-written

    resumed_log = []
    fresh = build_predictor("wnn", input_length=3, horizon=2)
    result = fit(fresh, make_batches, val, settings, tmp_path, fingerprint={"a": 1}, log=resumed_log.append)
    assert result.start_step == 20
    assert [r["step"] for r in resumed_log] == [25, 30, 35, 40]  # no step 0: it continued
    state = json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())
    assert state["step"] == 40 and state["optimizer"]["param_groups"][0]["params"]
    # The best weights by validation loss survive the crash: the best over steps 0-20 and 25-40.
    losses = {r["step"]: r["val_loss"] for r in logged + resumed_log}  # step 25: the resumed run's
    best_step = min(losses, key=losses.get)
    assert state["best_step"] == result.best_step == best_step
    assert state["best_loss"] == pytest.approx(losses[best_step], rel=1e-9)
    # evaluate() sums in float64 over the same windows as the logged validation: equal to rounding
    assert evaluate(result.predictor, val)["loss"] == pytest.approx(losses[best_step], rel=1e-6)

    # More steps later: continues from 40; the same steps again: nothing to do.
    longer = fit(build_predictor("wnn", input_length=3, horizon=2), make_batches, val,
                 FitSettings(steps=50, eval_every=5, checkpoint_every=10), tmp_path, fingerprint={"a": 1})
    assert longer.start_step == 40 and latest_checkpoint(tmp_path).name == "step-00000050"
    again = fit(build_predictor("wnn", input_length=3, horizon=2), make_batches, val,
                FitSettings(steps=50), tmp_path, fingerprint={"a": 1})
    assert again.start_step == 50
    for name, tensor in again.predictor.state_dict().items():
        assert torch.equal(tensor, longer.predictor.state_dict()[name])
    with pytest.raises(ConfigError, match="made for"):
        fit(build_predictor("wnn", input_length=3, horizon=2), make_batches, val, settings, tmp_path,
            fingerprint={"a": 2})


def test_fit_returns_the_best_weights_not_the_last(collection, tmp_path):
    predictor, make_batches, val = _fit_setup(collection)
    rows = []
    # A constant lr: the validation loss goes down, then up again (best at step 25).
    constant = dict(optimizer=OptimizerConfig(lr=0.01), schedule=ScheduleConfig(name="constant"))
    settings = FitSettings(steps=30, eval_every=5, checkpoint_every=100, **constant)
    result = fit(predictor, make_batches, val, settings, tmp_path, log=rows.append)
    losses = {r["step"]: r["val_loss"] for r in rows}
    best = min(losses, key=losses.get)
    assert list(losses) == [0, 5, 10, 15, 20, 25, 30] and best not in (0, 30)
    assert result.best_step == best and result.best_loss == pytest.approx(losses[best], rel=1e-9)
    assert evaluate(result.predictor, val)["loss"] == pytest.approx(losses[best], rel=1e-6)


def test_fit_without_data_raises(tmp_path):
    predictor = build_predictor("wnn", input_length=3, horizon=2)
    with pytest.raises(NoTrainingData):
        fit(predictor, lambda start: [], None, FitSettings(steps=5), tmp_path)


@pytest.mark.slow
def test_killed_command_resumes(collection, tmp_path):
    """SIGKILL the CLI after its first checkpoint; the same command continues from it."""
    command = [
        sys.executable, "-m", "weightcast.train_predictor", "--config", str(DEBUG),
        *_debug_overrides(collection, tmp_path, "predictors=[wnn]", "layer_types=[bias]"),
        "checkpoint_every=20",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    folder = tmp_path / "checkpoints" / "wnn" / "bias"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [*command, "steps=100000"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            for _ in range(600):
                if latest_checkpoint(folder) is not None or process.poll() is not None:
                    break
                threading.Event().wait(0.1)
        finally:
            process.kill()  # SIGKILL
            process.wait()
    assert latest_checkpoint(folder) is not None, (tmp_path / "stderr.txt").read_text()[-2000:]
    step = int(latest_checkpoint(folder).name.split("-")[1])
    done = subprocess.run(
        [*command, f"steps={step + 20}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wnn/bias: resumed from the checkpoint at step {step}" in done.stdout
    assert PredictorBundle.from_pretrained(tmp_path / "wnn").layer_types == ("bias",)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_make_a_valid_bundle(collection, tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "weightcast.train_predictor", "--config", str(DEBUG),
        *_debug_overrides(collection, tmp_path, "steps=20", "eval_every=10", "checkpoint_every=10"),
        "device=cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 processes" in done.stdout and done.stdout.count("bundle ") == 2  # rank 0 alone prints
    for kind in ("wnn", "lfd2"):
        bundle = PredictorBundle.from_pretrained(tmp_path / kind)
        assert bundle.layer_types == ("linear", "bias")
        assert all({kind, "no-jump", "linear-fit"} <= set(row) for row in bundle.validation.values())


def test_default_config_runs_on_a_small_collection(collection, tmp_path):
    overrides = [f"collection={collection}", f"out_dir={tmp_path}", "progress=false", "steps=4", "eval_every=2"]
    config = load_train_predictor_config(ROOT / "configs" / "train_predictor" / "default.yaml", overrides)
    result = train_predictors(config, echo=lambda message: None)
    for kind in ("wnn", "lfd2"):
        bundle = PredictorBundle.from_pretrained(result.bundles[kind])
        assert (bundle.input_length, bundle.horizon) == (5, 5) and bundle.layer_types == ("linear", "bias")


def test_errors_say_what_is_wrong(collection, tmp_path, capsys):
    with pytest.raises(UnknownNameError, match="unknown predictor 'wnx'.*wnn"):
        load_train_predictor_config(DEBUG, ["predictors=[wnx]"])
    assert run_command(COMMAND, ["--config", str(DEBUG), "predictors=[wnx]"]) == 2
    assert "unknown predictor 'wnx'" in capsys.readouterr().err

    def run(*overrides):
        config = load_train_predictor_config(DEBUG, _debug_overrides(collection, tmp_path, *overrides))
        return train_predictors(config, echo=lambda message: None)

    with pytest.raises(ConfigError, match=r"layer type\(s\) \['conv'\] have no histories.*linear, bias"):
        run("layer_types=[conv]")
    with pytest.raises(ConfigError, match="does not exist"):
        run(f"collection={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match=r"= 20 snapshots, the training runs have \[13\]"):
        run("predictors=[wnn]", "predictor_kwargs.wnn.input_length=10", "predictor_kwargs.wnn.horizon=10")
    with pytest.raises(ConfigError, match="bad config keys.*valid keys"):
        run("predictors=[wnn]", "predictor_kwargs.wnn.skip=3")
    with pytest.raises(ConfigError, match="no run with split='heldout'.*status"):
        run("split=heldout", "statuses=[diverged]")
    with pytest.raises(ConfigError, match="val_holdout names"):
        run("val_holdout=[mnist1d]", "val_by=task")
