"""train_predictor reads a collection through collect's checks: a truncated, bit-flipped or garbage
shard stops `weightcast train-predictor` with a named error instead of training on less, and a
collection's index fields never reach the shell of a `pipe:` location."""

import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from weightcast.cli import run_command
from weightcast.collect import CorruptShardError, load_collect_config, run_collection
from weightcast.collect.schema import SchemaError
from weightcast.errors import USER_ERROR_EXIT_CODE
from weightcast.train_predictor.cli import COMMAND
from weightcast.train_predictor.data import WindowSpec, open_collection, train_batches, validation_windows

from ..http_folder import serve_folder

ROOT = Path(__file__).resolve().parents[2]
COLLECT_DEBUG = ROOT / "configs" / "collect" / "debug.yaml"
DEBUG = ROOT / "configs" / "train_predictor" / "debug.yaml"
SPEC = WindowSpec(input_length=2, horizons=(1,))


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """The debug collection, one group (and one shard per layer type) per run."""
    out = tmp_path_factory.mktemp("debug")
    config = load_collect_config(COLLECT_DEBUG, [f"out_dir={out}", "engine.workers=1", "record.shard_size=1"])
    run_collection(config, progress=False, echo=lambda line: None)
    return out


def _damaged_copy(collection: Path, tmp_path: Path, damage: str) -> tuple[Path, str]:
    """A copy with one linear shard (of an MLP run: 2 samples) damaged; (copy, the shard's path)."""
    copy = tmp_path / "copy"
    shutil.copytree(collection, copy)
    index = json.loads((copy / "collection.json").read_text())
    shard = next(s for s in index["shards"] if s["layer_type"] == "linear" and s["samples"] == 2)
    path = copy / shard["path"]
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    if damage == "truncate":  # at the end of the first sample: a valid tar, one sample short
        first = [m for m in members if m.name.startswith(members[0].name.split(".")[0])]
        os.truncate(path, max(m.offset_data + -(-m.size // 512) * 512 for m in first))
    elif damage == "flip":  # 16 bytes of the first history's tensor data
        payload = next(m for m in members if m.name.endswith(".history.safetensors"))
        with open(path, "r+b") as f:
            f.seek(payload.offset_data + payload.size - 16)
            data = f.read(16)
            f.seek(payload.offset_data + payload.size - 16)
            f.write(bytes(b ^ 0x5A for b in data))
    else:  # garbage of the same size
        path.write_bytes(os.urandom(shard["bytes"]))
    return copy, shard["path"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_shards_stop_the_pipeline_with_a_named_error(collection, tmp_path, damage):
    copy, shard = _damaged_copy(collection, tmp_path, damage)
    source = open_collection(str(copy))
    run_ids = {r["run_id"] for r in source.runs}
    with pytest.raises(CorruptShardError, match=f"corrupt shard .*{shard}"):
        validation_windows(source, "linear", run_ids, SPEC, windows_per_history=4, max_windows=10_000)
    batches = train_batches(
        source, "linear", run_ids, SPEC, batch_size=8, windows_per_history=4, shuffle_buffer=8,
        num_batches=1000,
    )  # fmt: skip
    with pytest.raises(CorruptShardError, match=f"corrupt shard .*{shard}"):
        list(batches)


def test_train_predictor_refuses_a_truncated_shard(collection, tmp_path, capsys):
    copy, shard = _damaged_copy(collection, tmp_path, "truncate")
    overrides = [f"collection={copy}", f"out_dir={tmp_path / 'run'}", "progress=false", "steps=4"]
    assert run_command(COMMAND, ["--config", str(DEBUG), *overrides]) == USER_ERROR_EXIT_CODE
    error = capsys.readouterr().err
    assert f"corrupt shard {copy / shard}" in error and "Traceback" not in error
    assert not (tmp_path / "run" / "wnn").exists()  # no bundle trained on less data


def test_truncated_shard_over_http_is_refused(collection, tmp_path):
    copy, shard = _damaged_copy(collection, tmp_path, "truncate")
    with serve_folder(copy) as url:
        source = open_collection(url)
        run_ids = {r["run_id"] for r in source.runs}
        with pytest.raises(CorruptShardError, match=rf"{shard}: it holds 1 samples, the index says 2"):
            validation_windows(source, "linear", run_ids, SPEC, windows_per_history=4, max_windows=100)


def test_index_fields_never_reach_the_shell_of_a_pipe_location(collection, tmp_path):
    marker = tmp_path / "PWNED"
    copy = tmp_path / "copy"
    shutil.copytree(collection, copy)
    index = json.loads((copy / "collection.json").read_text())
    index["runs"][0]["group_id"] = f"x.json; touch {marker}; echo x"
    (copy / "collection.json").write_text(json.dumps(index))
    with pytest.raises(SchemaError, match="group_id .* is not a plain name"):
        open_collection(f"pipe:cat {copy}")
    assert not marker.exists()
    # An honest collection reads the same through the user's own `pipe:` command.
    local, piped = open_collection(str(collection)), open_collection(f"pipe:cat {collection}")
    assert piped.runs == local.runs
    run_ids = {r["run_id"] for r in local.runs}
    a, b = (
        validation_windows(s, "bias", run_ids, SPEC, windows_per_history=4, max_windows=1000, seed=1)
        for s in (local, piped)
    )
    assert len(a) > 0 and a.inputs.equal(b.inputs) and a.targets.equal(b.targets)
