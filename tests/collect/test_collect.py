"""collect: shards written and read back bit-identically, deterministic run IDs, resume after
SIGKILL, partitions, divergence, corrupt shards, bad input, and the Ray engine on a local instance."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import webdataset as wds

import weightcast.collect as collect
import weightcast.collect.worker
from weightcast.collect import Collection, CollectError, CorruptShardError, decode_sample, expand, run_collection
from weightcast.collect.cli import COMMAND
from weightcast.collect.config import load_collect_config, parse_size, resolve_part, run_id
from weightcast.collect.engines import select_part
from weightcast.collect.schema import SHARDS_DIR, SchemaError
from weightcast.cli import run_command
from weightcast.errors import USER_ERROR_EXIT_CODE
from weightcast.zoo.config import ConfigError
from weightcast.zoo.registry import UnknownNameError
from weightcast.zoo.train import Hook, train

from ..wandb_records import offline_runs

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "configs" / "collect" / "debug.yaml"
QUIET = ["engine.workers=1", "engine.threads_per_worker=1"]  # in this process, one thread

# Four MLP runs: the first group of the debug config (a subset of its runs, with the same IDs).
MLP_ONLY = """
name: mlp-only
population:
  - arch: [mlp]
    arch_kwargs: [{depth: 1, width: 16}]
    task: [mnist1d]
    optimizer: [adam, sgd]
    lr: [0.003]
    batch_size: [128]
    epochs: [3]
    seed: [0, 1]
record: {shard_size: 1MB}
engine: {workers: 1}
"""


class _InMemory(Hook):
    """Keeps every epoch's snapshot in RAM, keyed by run ID: what the shards must hold."""

    def __init__(self, store, key):
        self.store, self.key = store, key

    def on_train_start(self, state):
        self.store[self.key] = {n: [p.detach().clone()] for n, p in state.model.named_parameters()}

    def on_epoch_end(self, state):
        for n, p in state.model.named_parameters():
            self.store[self.key][n].append(p.detach().clone())


def _config(path, *overrides):
    return load_collect_config(path, [*QUIET, *overrides])


def _collect(config):
    return run_collection(config, progress=False, echo=lambda line: None)


def _collect_with_memory(monkeypatch, config):
    """run_collection with an extra hook that records the same trainings in memory."""
    store = {}

    def train_and_remember(cfg, hooks=(), task=None):
        return train(cfg, hooks=[*hooks, _InMemory(store, run_id(cfg, config.record))], task=task)

    monkeypatch.setattr(weightcast.collect.worker, "train", train_and_remember)
    return _collect(config), store


def _by_key(collection, **filters):
    return {(h.run_id, h.param_name): h for h in collection.histories(**filters)}


def _shard_files(root):
    return sorted(p.relative_to(root).as_posix() for p in (root / SHARDS_DIR).rglob("*") if p.is_file())


def _mlp_config(tmp_path, *overrides):
    (tmp_path / "mlp.yaml").write_text(MLP_ONLY)
    return _config(tmp_path / "mlp.yaml", f"out_dir={tmp_path / 'c'}", *overrides)


@pytest.fixture(scope="module")
def debug_collection(tmp_path_factory):
    out = tmp_path_factory.mktemp("debug")
    mp = pytest.MonkeyPatch()
    try:
        result, memory = _collect_with_memory(mp, _config(DEBUG, f"out_dir={out}"))
    finally:
        mp.undo()
    return out, result, memory


def test_round_trip_is_bit_identical_and_indexed(debug_collection):
    out, result, memory = debug_collection
    collection = Collection(out)
    totals = collection.index["totals"]
    assert collection.index["complete"] and totals["runs"] == 6 == len(memory)
    histories = _by_key(collection)
    assert len(histories) == sum(len(params) for params in memory.values()) == totals["trajectories"]
    for (rid, name), h in histories.items():
        expected = torch.stack(memory[rid][name])  # (epochs + 1, *shape)
        assert h.values.dtype == torch.float32 and torch.equal(h.values, expected), (rid, name)
        assert h.epochs == [0.0, 1.0, 2.0, 3.0] and h.steps == [0, 31, 62, 93]  # 4000 train / batch 128
    # Runs: full records with configs, metrics and every parameter's layer type.
    runs = collection.runs()
    assert sorted(r["run_id"] for r in runs) == sorted(memory) == [s.run_id for s in result.expansion.runs]
    conv = collection.runs(arch="conv1d")
    assert len(conv) == 2 and {r["augmentation"] for r in conv} == {"none", "shift"}
    assert all(r["status"] == "complete" and len(r["metrics"]) == 4 and r["split"] == "train" for r in runs)
    assert collection.runs(task="shapes") == [] and collection.runs(split="heldout") == []
    with pytest.raises(UnknownNameError, match="unknown task 'mnist-1d'"):  # a typo would select nothing
        collection.runs(task="mnist-1d")
    with pytest.raises(ValueError, match="layer_type must be one of"):
        next(collection.histories(layer_type="convolution"))
    # The index matches the shards on disk, one folder per layer type.
    assert _shard_files(out) == sorted(s["path"] for s in collection.index["shards"])
    assert all(s["bytes"] == (out / s["path"]).stat().st_size for s in collection.index["shards"])
    assert set(collection.layer_types) == {"linear", "bias", "conv"}
    # Reading one layer type opens only that type's shards.
    urls = collection.shard_urls("conv")
    assert urls and all(f"/{SHARDS_DIR}/conv/" in u for u in urls)
    conv_histories = list(collection.histories(layer_type="conv"))
    assert len(conv_histories) == 6 and {h.layer_type for h in conv_histories} == {"conv"}  # 3 x 2 runs
    # The same shards through a plain webdataset pipeline.
    pipeline = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(decode_sample)
    keys = sorted((h.run_id, h.param_name) for h in conv_histories)
    assert sorted((h.run_id, h.param_name) for h in pipeline) == keys
    log = (out / "log.txt").read_text().splitlines()
    assert len(log) == 6 and all(" complete " in line for line in log)


def test_run_ids_are_deterministic_and_expansion_counts_skips():
    first, second = expand(load_collect_config(DEBUG)), expand(load_collect_config(DEBUG))
    ids = [r.run_id for r in first.runs]
    assert ids == [r.run_id for r in second.runs] == sorted(ids) and len(ids) == 6
    assert first.population_hash == second.population_hash
    # A change in a run-defining setting changes the IDs; one in where runs execute does not.
    assert not set(ids) & {r.run_id for r in expand(load_collect_config(DEBUG, ["record.dtype=fp16"])).runs}
    elsewhere = expand(load_collect_config(DEBUG, ["device=cpu", "engine.workers=3", "part=1/2"]))
    assert [r.run_id for r in elsewhere.runs] == ids
    # Incompatible pairs are skipped and counted, duplicates collapse and are counted.
    grid = "{arch: [mlp, conv1d, gru], task: [mnist1d, syn1], augmentation: [none, flip], seed: [0, 0]}"
    e = expand(load_collect_config(None, [f"population=[{grid}]"]))
    assert e.drawn == 24 and len(e.runs) == 4 and e.duplicates == 4
    assert e.incompatible == {
        "architecture conv1d on task syn1": 4,
        "architecture gru on task syn1": 4,
        "augmentation flip on task mnist1d (signal inputs)": 6,
        "augmentation flip on task syn1 (tabular inputs)": 2,
    }
    assert "4 runs (24 combinations drawn, 16 incompatible skipped, 4 duplicates collapsed)" in e.summary()
    # Random mode: the same draws for the same seed, others for another.
    space = "{arch: [mlp], mode: random, num_runs: 5, lr_range: [0.0001, 0.1], seed: [0, 1, 2]}"
    a, b = (expand(load_collect_config(None, [f"population=[{space}]"])) for _ in range(2))
    c = expand(load_collect_config(None, [f"population=[{space}]", "seed=1"]))
    assert [r.run_id for r in a.runs] == [r.run_id for r in b.runs] != [r.run_id for r in c.runs]
    assert all(1e-4 <= r.train["optimizer"]["lr"] <= 0.1 for r in a.runs)
    # Partitions split the sorted runs by index mod N; SLURM array variables give the default.
    parts = [select_part(first.runs, (i, 4)) for i in range(4)]
    assert sorted(r.run_id for p in parts for r in p) == ids
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert resolve_part("", slurm) == (2, 4) and resolve_part("", {}) is None
    assert resolve_part("1/3") == (1, 3)
    assert parse_size("64MB") == 64_000_000 and parse_size("1KiB") == 1024 and parse_size(5) == 5


def test_bad_config_input_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("population:\n  - arch: [mlp]\n    archs: [mlp]\n")
    with pytest.raises(ConfigError, match=r"population\[0\] has unknown key\(s\) \['archs'\]; valid keys: a"):
        load_collect_config(bad)
    with pytest.raises(ConfigError, match="unknown config key 'engine.gpus'"):
        load_collect_config(DEBUG, ["engine.gpus=1"])
    with pytest.raises(ConfigError, match="part must be 'i/N'"):
        load_collect_config(DEBUG, ["part=2/2"])
    with pytest.raises(ConfigError, match="record.dtype must be one of fp32, fp16, bf16"):
        load_collect_config(DEBUG, ["record.dtype=fp64"])
    with pytest.raises(UnknownNameError, match="unknown architecture 'mlpp'"):
        expand(load_collect_config(DEBUG, ["population.0.arch=[mlpp]"]))
    with pytest.raises(ConfigError, match="bad arch_kwargs"):
        expand(load_collect_config(DEBUG, ["population.0.arch_kwargs=[{depthh: 1}]"]))
    with pytest.raises(ConfigError, match="mnist"):  # a data folder without the files
        expand(load_collect_config(DEBUG, [f"data_dir={tmp_path}", "population.0.task=[mnist]"]))


def test_folder_of_another_collection_is_refused(debug_collection, tmp_path):
    out, _, _ = debug_collection
    with pytest.raises(CollectError, match="another population"):
        _collect(_config(DEBUG, f"out_dir={out}", "population.0.seed=[5]"))
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 1}))
    with pytest.raises(CollectError, match="of schema version 1; this weightcast writes version 2"):
        _collect(_config(DEBUG, f"out_dir={copy}"))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CollectError, match="is not empty and holds no collection manifest"):
        _collect(_config(DEBUG, f"out_dir={tmp_path}"))
    again = _collect(_config(DEBUG, f"out_dir={out}"))  # the same config resumes: nothing to do
    assert again.finished == [] and again.already_complete == 6


def test_partitions_together_equal_the_whole(debug_collection, tmp_path):
    out, _, _ = debug_collection
    first = _collect(_mlp_config(tmp_path, "part=0/2"))
    parts_dir = tmp_path / "c"
    assert first.index is None and not (parts_dir / "collection.json").exists() and len(first.finished) == 2
    with pytest.raises(CollectError, match="2 of 4 runs .* are not committed yet"):
        collect.write_index(parts_dir)
    refused = run_command(COMMAND, ["merge-index", str(parts_dir)])
    assert refused == USER_ERROR_EXIT_CODE  # refuses a partial index...
    assert run_command(COMMAND, ["merge-index", str(parts_dir), "--partial"]) == 0  # ...unless asked
    with pytest.raises(CollectError, match=r"the index of .* is partial \(2 of 4 runs\)"):
        Collection(parts_dir)
    assert len(Collection(parts_dir, allow_incomplete=True).runs()) == 2
    second = _collect(_mlp_config(tmp_path, "part=1/2"))
    assert second.index is not None and second.index["complete"]
    assert {p.name.split("-")[0] for p in (parts_dir / SHARDS_DIR).rglob("*.tar")} == {"part0of2", "part1of2"}
    merged = collect.write_index(parts_dir)
    assert [r["run_id"] for r in merged["runs"]] == [r["run_id"] for r in second.index["runs"]]
    whole, split = _by_key(Collection(out), arch="mlp"), _by_key(Collection(parts_dir))
    assert whole.keys() == split.keys() and len(split) == 16
    assert all(torch.equal(whole[k].values, split[k].values) for k in whole)


def test_diverged_run_is_recorded_and_the_collection_goes_on(tmp_path):
    space = "{arch: [mlp], arch_kwargs: [{width: 8}], optimizer: [sgd], lr: [1.0e+6, 0.01], epochs: [3]}"
    result = _collect(_config(None, f"out_dir={tmp_path}", f"population=[{space}]"))
    assert result.index["totals"]["diverged"] == 1 and result.index["totals"]["runs"] == 2
    collection = Collection(tmp_path)
    (diverged,) = collection.runs(status="diverged")
    assert diverged["optimizer"] == "sgd" and diverged["lr"] == 1e6
    assert any(m["train_loss"] is None for m in diverged["metrics"])  # the non-finite epoch, as null
    histories = list(collection.histories(status="diverged"))
    assert histories and all(torch.isfinite(h.values).all() for h in histories)
    assert all(len(h.epochs) == diverged["snapshots"] < 4 for h in histories)  # up to the divergence
    assert " diverged " in (tmp_path / "log.txt").read_text()


def test_corrupt_shards_raise_or_are_skipped(debug_collection, tmp_path):
    out, _, _ = debug_collection
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    collection = Collection(copy)
    linear = [s for s in collection.index["shards"] if s["layer_type"] == "linear"]
    (conv,) = [s for s in collection.index["shards"] if s["layer_type"] == "conv"]
    truncated, zeroed = copy / linear[0]["path"], copy / conv["path"]
    with open(truncated, "r+b") as f:
        f.truncate(linear[0]["bytes"] // 2)
    with open(zeroed, "r+b") as f:  # same size, the second half zeroed: a tar that breaks off
        f.seek(conv["bytes"] // 2)
        f.write(bytes(conv["bytes"] - conv["bytes"] // 2))
    with pytest.raises(CorruptShardError, match=f"corrupt shard {truncated}: .*truncated"):
        list(collection.histories(layer_type="linear"))
    with pytest.raises(CorruptShardError, match=f"corrupt shard {zeroed}: (ReadError|it holds [0-5] sample)"):
        list(collection.histories(layer_type="conv"))
    with pytest.warns(UserWarning, match="skipping corrupt shard"):
        kept = list(collection.histories(on_corrupt="skip"))
    assert sorted(collection.skipped_shards) == sorted([str(truncated), str(zeroed)])
    counts = {t: sum(h.layer_type == t for h in kept) for t in ("bias", "linear", "conv")}
    assert counts["bias"] == 16 and counts["linear"] == 10 - linear[0]["samples"] and counts["conv"] < 6
    # A reader refuses an index of another schema version.
    index = json.loads((copy / "collection.json").read_text())
    (copy / "collection.json").write_text(json.dumps({**index, "schema_version": 99}))
    with pytest.raises(SchemaError, match="version 99, but this weightcast reads and writes version 2"):
        Collection(copy)


def test_disk_full_leaves_nothing_marked_complete(tmp_path, monkeypatch):
    config = _mlp_config(tmp_path)
    real_write, calls = wds.TarWriter.write, []

    def fill_up(self, sample):
        calls.append(1)
        if len(calls) > 5:  # the third run's samples: the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, sample)

    monkeypatch.setattr(wds.TarWriter, "write", fill_up)
    with pytest.raises(CollectError, match=r"disk full while writing .*\.tar\.tmp; .*the same command again"):
        _collect(config)
    root = tmp_path / "c"
    assert not (root / "collection.json").exists() and not list((root / "commits").glob("*.json"))
    assert not list(root.rglob("*.tmp"))
    monkeypatch.setattr(wds.TarWriter, "write", real_write)
    result = _collect(config)
    assert result.index["complete"] and len(result.finished) == 4


def test_half_precision_step_snapshots_and_tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # real wandb runs, files under out_dir/wandb, no network
    config = _mlp_config(tmp_path, "record.dtype=bf16", "record.every_steps=10", "tracking.name=wandb")
    result, memory = _collect_with_memory(monkeypatch, config)
    # wandb: every run its own curve (keys run/<run_id>/*), the session's run logs the index artifact
    runs = offline_runs(tmp_path / "c" / "wandb")
    assert {r.group for r in runs} == {config.name} and {r.job_type for r in runs} == {"collect"}
    curves = {k.split("/")[1] for r in runs for row in r.history for k in row if k.startswith("run/")}
    assert curves == {s["run_id"] for s in result.finished}
    for run_id in curves:
        key = f"run/{run_id}/epoch"
        epochs = [row[key] for r in runs for row in r.history if key in row]
        assert epochs == sorted(epochs) == list(range(1, len(epochs) + 1))  # no sawtooth
    (index,) = [a for r in runs for a in r.artifacts if a["type"] == "collection"]
    assert index["name"] == f"collection-{config.name}" and index["metadata"]["runs"] == 4
    for h in Collection(tmp_path / "c").histories():
        assert h.values.dtype == torch.bfloat16
        # steps 10, 20, 30 of each 31-step epoch, and every epoch end
        assert h.steps == [0, 10, 20, 30, 31, 40, 50, 60, 62, 70, 80, 90, 93]
        assert h.epochs[:5] == [0.0, 10 / 31, 20 / 31, 30 / 31, 1.0]
        at_epoch_ends = h.values[[i for i, e in enumerate(h.epochs) if e == int(e)]]
        assert torch.equal(at_epoch_ends, torch.stack(memory[h.run_id][h.param_name]).to(torch.bfloat16))
    assert len(result.finished) == 4


def test_missing_wandb_login_stops_collect_before_any_run(tmp_path, monkeypatch, capsys):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "mlp-only.yaml"
    path.write_text(MLP_ONLY)
    code = run_command(COMMAND, ["--config", str(path), f"out_dir={tmp_path / 'c'}", "tracking.name=wandb"])
    err = capsys.readouterr().err
    assert code == USER_ERROR_EXIT_CODE and "wandb login" in err and "WANDB_MODE=offline" in err
    assert not (tmp_path / "c").exists()  # checked before the folder or any run


def test_failed_run_stops_the_collection_and_resumes(tmp_path, monkeypatch):
    config = _mlp_config(tmp_path)
    calls = []

    def flaky(cfg, hooks=(), task=None):
        calls.append(cfg.seed)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return train(cfg, hooks=hooks, task=task)

    monkeypatch.setattr(weightcast.collect.worker, "train", flaky)
    with pytest.raises(CollectError, match=r"run \w{12} \(mlp on mnist1d\) failed: RuntimeError: CUDA out"):
        _collect(config)
    (commit,) = (tmp_path / "c" / "commits").glob("*.json")
    assert len(json.loads(commit.read_text())["runs"]) == 2  # the runs before the failure are kept
    monkeypatch.setattr(weightcast.collect.worker, "train", train)
    result = _collect(config)
    assert len(result.finished) == 2 and result.index["totals"]["runs"] == 4


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    slow = MLP_ONLY.replace("epochs: [3]", "epochs: [25]").replace("seed: [0, 1]", "seed: [0, 1, 2]")
    config = tmp_path / "slow.yaml"
    config.write_text(slow.replace("width: 16", "width: 64").replace("shard_size: 1MB", "shard_size: 1"))
    out = tmp_path / "c"
    overrides = [f"out_dir={out}", "engine.workers=2", "engine.threads_per_worker=1"]
    cmd = [sys.executable, "-m", "weightcast.collect", "--no-progress", "--config", str(config), *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    # Kill once one run is committed and others are training (their snapshots are in the spool).
    while time.monotonic() < deadline and proc.poll() is None:
        if list((out / "commits").glob("*.json")) and list((out / "spool").glob("*.raw")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The worker processes died with their parent: nothing changes in the folder any more.
    time.sleep(1.0)
    before = sorted((p, p.stat().st_size) for p in out.rglob("*") if p.is_file())
    time.sleep(1.5)
    assert before == sorted((p, p.stat().st_size) for p in out.rglob("*") if p.is_file())
    assert not (out / "collection.json").exists()
    commits = [json.loads(p.read_text()) for p in (out / "commits").glob("*.json")]
    committed = {r["run_id"] for c in commits for r in c["runs"]}
    assert 1 <= len(committed) < 6
    # Leftovers of a crash in the middle of a commit: a temporary shard and an unreferenced one.
    (out / SHARDS_DIR / "linear" / "all-w00-deadbeef-0000.tar.tmp").write_bytes(b"half a tar")
    (out / SHARDS_DIR / "linear" / "all-w00-deadbeef-0001.tar").write_bytes(b"never committed")
    result = _collect(_config(config, f"out_dir={out}"))
    assert committed.isdisjoint(s["run_id"] for s in result.finished)  # completed runs are not retrained
    assert len(result.finished) + len(committed) == 6 == result.index["totals"]["runs"]
    assert not list(out.rglob("*.tmp")) and not list((out / "spool").iterdir())
    collection = Collection(out)
    assert _shard_files(out) == sorted(s["path"] for s in collection.index["shards"])
    per_run = {}
    for h in collection.histories():
        per_run[h.run_id] = per_run.get(h.run_id, 0) + 1
        assert h.values.shape[0] == 26
    assert len(per_run) == 6 and set(per_run.values()) == {4}  # every run exactly once, all 4 tensors


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_gives_the_same_runs_as_local(debug_collection, ray_instance, tmp_path):
    out, _, _ = debug_collection
    result = _collect(_config(DEBUG, f"out_dir={tmp_path}", "engine.name=ray", "engine.workers=2"))
    assert result.index["complete"]
    writers = {p.name.split("-")[1] for p in (tmp_path / SHARDS_DIR).rglob("*.tar")}
    assert writers == {"w00", "w01"}  # two actors
    local, remote = _by_key(Collection(out)), _by_key(Collection(tmp_path))
    assert local.keys() == remote.keys()
    assert all(torch.equal(local[k].values, remote[k].values) for k in local)
