"""collect: nothing lost, nothing injected. Checksummed shards, a reader that refuses damage with a
named error (file, what is wrong, how to recover), index fields that never reach a shell, temporary
files that never block a resume, validation before anything is written, files that follow the
umask, the same runs on every engine, and resumes after SIGKILLs at random points."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

import weightcast.collect.worker

from weightcast.collect import (
    Collection,
    CollectError,
    CorruptShardError,
    load_collect_config,
    run_collection,
)
from weightcast.collect.schema import SHARDS_DIR, SchemaError
from weightcast.zoo.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEBUG = REPO / "configs" / "collect" / "debug.yaml"
# In this process (threads_per_worker: 1, the default); a commit after every run, so that the debug
# collection's 6 runs are 6 groups (a group's shards and commit record can be damaged alone).
QUIET = ["engine.workers=1", "record.shard_size=1"]


def _collect(path, *overrides):
    config = load_collect_config(path, [*QUIET, *overrides])
    return run_collection(config, progress=False, echo=lambda line: None)


def _histories(location, **filters):
    return {(h.run_id, h.param_name): h.values for h in Collection(location).histories(**filters)}


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _member_offsets(shard):
    """(sample key, end offset of its last member's data, rounded to the tar block) per sample,
    and the data offset of each `history.safetensors` member."""
    ends, payloads = {}, {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key = member.name.split(".")[0]
            ends[key] = member.offset_data + -(-member.size // 512) * 512
            if member.name.endswith(".history.safetensors"):
                payloads[key] = (member.offset_data, member.size)
    return ends, payloads


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The debug collection, collected once in this process."""
    out = tmp_path_factory.mktemp("clean")
    _collect(DEBUG, f"out_dir={out}")
    return out


def test_truncated_shard_at_a_sample_boundary_is_refused(clean, tmp_path):
    copy = _copy(clean, tmp_path / "copy")
    collection = Collection(copy)
    conv = next(s for s in collection.index["shards"] if s["layer_type"] == "conv")
    ends, _ = _member_offsets(copy / conv["path"])
    assert conv["samples"] == 3  # one conv1d run: 3 conv parameters
    cut = sorted(ends.values())[1]  # after the second sample: a valid tar prefix, one sample short
    os.truncate(copy / conv["path"], cut)
    with pytest.raises(CorruptShardError, match=rf"{conv['path']}: it has {cut} bytes, the index says"):
        list(Collection(copy).histories(layer_type="conv"))
    # Read as a stream (no size to stat first), the sample count and the bytes read give it away.
    reader = Collection(copy)
    url = str(copy / conv["path"])
    reader._shards[url] = {**conv, "bytes": cut}  # as if the index agreed on the size
    with pytest.raises(CorruptShardError, match=r"it holds 2 samples, the index says 3; .*commits/"):
        list(reader.read_samples([{"url": url}]))


def test_flipped_bytes_in_a_tensor_are_detected(clean, tmp_path):
    copy = _copy(clean, tmp_path / "copy")
    shards = Collection(copy).index["shards"]
    shard = next(s for s in shards if s["layer_type"] == "linear" and s["samples"] > 1)  # an MLP run's
    _, payloads = _member_offsets(copy / shard["path"])
    key, (offset, size) = sorted(payloads.items())[1]
    with open(copy / shard["path"], "r+b") as f:  # 16 bytes at the end of the tensor data, same size
        f.seek(offset + size - 16)
        flipped = bytes(b ^ 0xFF for b in f.read(16))
        f.seek(offset + size - 16)
        f.write(flipped)
    with pytest.raises(CorruptShardError, match=rf"sample '{key}': the history's sha256 differs"):
        list(Collection(copy).histories(layer_type="linear"))
    with pytest.warns(UserWarning, match="skipping corrupt shard"):
        kept = list(Collection(copy).histories(layer_type="linear", on_corrupt="skip"))
    assert len(kept) < Collection(clean).index["layer_types"]["linear"]["trajectories"]


def test_shards_of_an_old_schema_version_are_refused_with_the_reason(clean, tmp_path):
    copy = _copy(clean, tmp_path / "copy")
    index = json.loads((copy / "collection.json").read_text())
    (copy / "collection.json").write_text(json.dumps({**index, "schema_version": 1}))
    with pytest.raises(SchemaError, match=r"version 1 .*no checksums.*collect again"):
        Collection(copy)


def test_a_pipe_location_never_runs_index_fields(clean, tmp_path):
    marker = tmp_path / "PWNED"
    # A legitimate collection reads the same through a `pipe:` location (the user's own command).
    assert torch.equal(*(
        torch.cat([v.flatten() for _, v in sorted(_histories(loc, layer_type="bias").items())])
        for loc in (clean, f"pipe:cat {clean}")
    ))  # fmt: skip
    evil_group = f"x.json; touch {marker}; echo x"
    for field in ("group_id", "path"):
        copy = _copy(clean, tmp_path / f"evil-{field}")
        index = json.loads((copy / "collection.json").read_text())
        if field == "group_id":
            index["runs"][0]["group_id"] = evil_group
        else:
            index["shards"][0]["path"] = f"shards/bias/x.tar; touch {marker}; echo "
        (copy / "collection.json").write_text(json.dumps(index))
        with pytest.raises(SchemaError, match=f"{field}|shard path"):
            Collection(f"pipe:cat {copy}").runs()
        assert not marker.exists()


def test_damaged_index_and_missing_commit_record_give_named_errors(clean, tmp_path):
    copy = _copy(clean, tmp_path / "copy")
    index_path = copy / "collection.json"
    good = index_path.read_text()
    for text, message in (
        ("{not json", rf"cannot read collection index {index_path} \(JSONDecodeError"),
        ("[1, 2]", rf"{index_path} is not a JSON object; rebuild it .*merge-index"),
        (json.dumps({"schema_version": 2, "name": "debug"}), rf"{index_path}: field 'complete' must be"),
    ):
        index_path.write_text(text)
        with pytest.raises(CollectError, match=message):
            Collection(copy)
    index_path.write_text(good)
    record = sorted((copy / "commits").glob("*.json"))[0]
    record.unlink()
    with pytest.raises(CollectError, match=rf"commit record {record} is missing.*the same collect command"):
        Collection(copy).runs()
    # Following the advice repairs the collection: that group's runs are trained again.
    result = _collect(DEBUG, f"out_dir={copy}")
    assert result.index["complete"] and len(result.finished) == 1  # the group of one run
    assert _histories(copy).keys() == _histories(clean).keys()


def test_rerun_after_a_shard_was_deleted_says_how_to_recover(clean, tmp_path):
    copy = _copy(clean, tmp_path / "copy")
    record_path = sorted((copy / "commits").glob("*.json"))[0]
    shard = json.loads(record_path.read_text())["shards"][0]["path"]
    (copy / shard).unlink()
    with pytest.raises(CollectError, match=rf"shard .*{shard} is missing.*delete {record_path} and run"):
        _collect(DEBUG, f"out_dir={copy}")
    record_path.unlink()
    assert _collect(DEBUG, f"out_dir={copy}").index["complete"]
    histories, expected = _histories(copy), _histories(clean)
    assert histories.keys() == expected.keys()
    assert all(torch.equal(histories[k], expected[k]) for k in expected)


def test_temporary_files_never_block_a_resume(clean, tmp_path):
    # A SIGKILL during the very first manifest write leaves config.yaml, meta.json and its temp file.
    out = tmp_path / "first"
    out.mkdir()
    shutil.copy(clean / "config.yaml", out / "config.yaml")
    shutil.copy(clean / "meta.json", out / "meta.json")
    (out / ".manifest.json.1f2e3d4c5b6a.tmp").write_text('{"schema_versi')
    (out / ".meta.json.abcdef.tmp").write_text("{")
    assert _collect(DEBUG, f"out_dir={out}").index["complete"]
    assert not list(out.rglob("*.tmp"))
    # Temp files of commit records and of the index are cleaned by a resume.
    copy = _copy(clean, tmp_path / "copy")
    (copy / "commits" / ".all-w00-deadbeef-0000.json.0a1b2c.tmp").write_text("{")
    (copy / ".collection.json.0a1b2c.tmp").write_text("{")
    assert _collect(DEBUG, f"out_dir={copy}").finished == []
    assert not list(copy.rglob("*.tmp"))
    # A folder of someone else's files is still refused, and nothing is written into it.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(CollectError, match="is not empty and holds no collection manifest"):
        _collect(DEBUG, f"out_dir={tmp_path / 'mine'}")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("population.0.lr=[-0.003]", r"population\[0\].lr must be a finite number > 0, got -0.003"),
        ("population.0.optimizer_kwargs={momentum: -0.5}", r"population\[0\]: .*Invalid momentum value"),
        ("population.1.optimizer_kwargs={beta2: 1.5}", r"population\[1\]: .*Invalid beta parameter"),
        ("record.commit_every_s=0", "record.commit_every_s must be > 0"),
    ],
)
def test_every_value_is_validated_before_the_folder_is_written(tmp_path, override, message):
    out = tmp_path / "c"
    with pytest.raises(ConfigError, match=message):
        _collect(DEBUG, f"out_dir={out}", override)
    assert not out.exists()
    # The same folder then takes the fixed config (it is not "another population").
    if override.startswith("population.0.lr"):
        assert _collect(DEBUG, f"out_dir={out}").index["complete"]


def test_a_folder_where_nothing_was_committed_takes_a_fixed_config(tmp_path, monkeypatch):
    def out_of_memory(cfg, hooks=(), task=None):
        raise RuntimeError("CUDA out of memory (simulated)")

    out = tmp_path / "c"
    monkeypatch.setattr(weightcast.collect.worker, "train", out_of_memory)
    with pytest.raises(CollectError, match="failed: RuntimeError: CUDA out of memory"):
        _collect(DEBUG, f"out_dir={out}", "population.0.batch_size=[4096]")
    assert (out / "manifest.json").is_file() and not list((out / "commits").glob("*.json"))
    monkeypatch.undo()
    # The user changes the batch size: another population, but no run of the first one exists.
    assert _collect(DEBUG, f"out_dir={out}").index["complete"]
    with pytest.raises(CollectError, match="another population"):  # now runs are committed
        _collect(DEBUG, f"out_dir={out}", "population.0.batch_size=[64]")


def test_files_follow_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        _collect(DEBUG, f"out_dir={tmp_path / 'c'}", "population=[{arch: [mlp], epochs: [1]}]")
    finally:
        os.umask(previous)
    root = tmp_path / "c"
    written = ["collection.json", "manifest.json", "meta.json", "config.yaml", "log.txt"]
    written += [p.relative_to(root).as_posix() for p in (root / "commits").glob("*.json")]
    written += [p.relative_to(root).as_posix() for p in (root / SHARDS_DIR).rglob("*.tar")]
    modes = {name: (root / name).stat().st_mode & 0o777 for name in written}
    assert modes == {name: 0o640 for name in written}  # 0666 & ~0027


def test_run_records_keep_the_thread_count(clean):
    assert {r["threads"] for r in Collection(clean).runs()} == {1}  # the default of every engine


def _collect_command(out, *overrides):
    return [
        sys.executable, "-m", "weightcast.collect", "--no-progress", "--config", str(DEBUG),
        f"out_dir={out}", *QUIET, *overrides,
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_a_clean_run(clean, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    timing = subprocess.run(_collect_command(tmp_path / "timing"), env=env, cwd=REPO, capture_output=True)
    assert timing.returncode == 0, timing.stderr.decode()
    duration = time.monotonic() - start  # of a whole run, start-up included
    out = tmp_path / "killed"
    rng = random.Random(0)
    for _ in range(5):  # each kill lands at a random point: start-up, prepare, training, commit, index
        proc = subprocess.Popen(
            _collect_command(out), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        time.sleep(rng.uniform(0.0, duration))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), stderr.decode()
    result = subprocess.run(_collect_command(out), env=env, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".raw"]
    assert leftovers == []
    killed, reference = Collection(out), Collection(clean)
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / SHARDS_DIR).rglob("*") if p.is_file())
    assert on_disk == sorted(s["path"] for s in killed.index["shards"])  # no unreferenced shard
    histories, expected = _histories(out), _histories(clean)
    assert histories.keys() == expected.keys()  # every run once, every parameter
    assert all(torch.equal(histories[k], expected[k]) for k in expected)  # bit for bit
    def outcome(run):  # what a run computed (not when or how fast)
        metrics = [{k: v for k, v in row.items() if k != "wall_time"} for row in run["metrics"]]
        return {"metrics": metrics, **{k: run[k] for k in ("status", "final_metric", "snapshots", "threads")}}

    runs = {r["run_id"]: outcome(r) for r in killed.runs()}
    assert runs == {r["run_id"]: outcome(r) for r in reference.runs()}


@pytest.mark.slow
def test_local_and_ray_engines_give_the_same_runs_by_default(clean, tmp_path):
    ray = pytest.importorskip("ray")
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        # No thread override: the defaults of each engine (the debug config's 2 workers on Ray).
        overrides = [f"out_dir={tmp_path / 'ray'}", "engine.name=ray", "engine.workers=2"]
        run_collection(load_collect_config(DEBUG, overrides), progress=False, echo=lambda line: None)
    finally:
        ray.shutdown()
    local = load_collect_config(DEBUG, [f"out_dir={tmp_path / 'local'}"])  # in this process, by default
    run_collection(local, progress=False, echo=lambda line: None)
    for other in (tmp_path / "ray", tmp_path / "local"):
        histories, expected = _histories(other), _histories(clean)
        assert histories.keys() == expected.keys()
        assert all(torch.equal(histories[k], expected[k]) for k in expected)
    assert {r["threads"] for r in Collection(tmp_path / "ray").runs()} == {1}
