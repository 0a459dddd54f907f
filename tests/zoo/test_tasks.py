"""Tests of zoo.tasks: every registered built-in task against its spec and metadata, determinism,
the shared split/standardize helpers, and the file readers (IDX, CIFAR batches) on tiny files
written here in the real formats."""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from weightcast.zoo.config import ConfigError
from weightcast.zoo.tasks import TASKS, get_task
from weightcast.zoo.tasks.files import (
    CIFAR10_FILES,
    IDX_FILES,
    DataFilesNotFoundError,
    read_cifar_batch,
    read_idx,
)
from weightcast.zoo.tasks.base import heldout_split, standardize
from weightcast.zoo.tasks.synthetic import SHAPE_CLASSES, make_shapes, make_syn1, make_syn2
from weightcast.zoo.tasks.text import UNKNOWN_ID, VOCAB, VOCAB_SIZE, decode, encode, stdlib_docstrings

BUILTIN = [n for n in TASKS.names() if not TASKS.metadata(n)["needs_data_dir"]]
FILE_BASED = [n for n in TASKS.names() if TASKS.metadata(n)["needs_data_dir"]]

# (train, val) sizes of every built-in task
SIZES = {
    "mnist1d": (4000, 1000),
    "mnist1d-large": (16000, 4000),
    "digits": (1438, 359),
    "wine": (142, 36),
    "breast-cancer": (456, 113),
    "syn1": (80, 20),
    "syn2": (80, 20),
    "shapes": (6000, 1500),
    "stdlib-chars": (20000, 4000),
    "stdlib-chars-small": (2500, 500),
    "stdlib-code-chars": (5000, 1000),
    "mackey-glass": (3968, 953),
}
SLOW = {"mnist1d-large"}  # ~10 s to generate; its second build (determinism) is marked slow


def test_registered_tasks() -> None:
    assert sorted(BUILTIN) == sorted(SIZES)
    assert sorted(FILE_BASED) == ["cifar10", "cifar100", "fashion-mnist", "mnist"]
    assert [TASKS.metadata(n)["split"] for n in FILE_BASED] == ["train", "heldout", "train", "train"]


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_task_matches_spec(name: str) -> None:
    task, meta = get_task(name), TASKS.metadata(name)
    spec = task.spec
    assert task.name == name
    assert (task.modality, task.split) == (meta["modality"], meta["split"])
    assert spec.input_kind == meta["input_kind"]
    assert (len(task.x_train), len(task.x_val)) == SIZES[name]
    for x, y in ((task.x_train, task.y_train), (task.x_val, task.y_val)):
        assert tuple(x.shape[1:]) == spec.input_shape
        if spec.objective == "regression":
            assert y.dtype == torch.float32 and tuple(y.shape) == (len(x), spec.num_outputs)
            assert torch.isfinite(y).all()
        else:
            assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < spec.num_outputs
            per_example = () if spec.objective == "classification" else spec.input_shape  # LM: (L,)
            assert tuple(y.shape) == (len(x), *per_example)
        if spec.input_kind == "tokens":
            assert x.dtype == torch.int64 and 0 <= int(x.min()) and int(x.max()) < spec.num_outputs
        else:
            assert x.dtype == torch.float32 and torch.isfinite(x).all()
    if spec.objective == "classification":  # every class is present in the training part
        assert torch.equal(task.y_train.unique(), torch.arange(spec.num_outputs))
    if spec.input_kind in ("image", "signal", "tabular") and task.modality != "synthetic":
        # standardized with training statistics: per feature (tabular) or per channel
        dims = (0,) if spec.input_kind == "tabular" else tuple(d for d in range(task.x_train.ndim) if d != 1)
        var, mean = torch.var_mean(task.x_train, dim=dims, correction=0)
        assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
        assert torch.allclose(var, torch.ones_like(var), atol=1e-3)
    if spec.input_kind != "tokens":  # no validation example is also a training example
        train_rows = {r.tobytes() for r in task.x_train.numpy().reshape(len(task.x_train), -1)}
        assert not any(r.tobytes() in train_rows for r in task.x_val.numpy().reshape(len(task.x_val), -1))


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in BUILTIN]
)
def test_builtin_task_is_deterministic(name: str) -> None:
    np_state, py_state = np.random.get_state(), random.getstate()
    fresh = TASKS.get(name)(None)  # bypasses get_task's cache
    # building a task leaves the global generators alone (mnist1d's generator reseeds them)
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state
    cached = get_task(name)
    assert fresh is not cached
    for part in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(fresh, part), getattr(cached, part)), part


def test_heldout_split_is_stratified_and_disjoint() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [2] * 20)
    train, val = heldout_split(len(labels), 0.2, seed=3, labels=labels)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(35))
    assert np.bincount(labels[val]).tolist() == [2, 1, 4]
    assert np.array_equal(val, heldout_split(len(labels), 0.2, seed=3, labels=labels)[1])
    assert len(heldout_split(100, 0.2, seed=0)[1]) == 20


def test_standardize_uses_training_statistics() -> None:
    x_train = np.array([[1.0, 10.0], [3.0, 10.0]])  # second feature constant
    x_val = np.array([[5.0, 12.0]])
    xt, xv = standardize(x_train, x_val, (0,))
    assert xt.dtype == torch.float32
    assert torch.allclose(xt, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    assert torch.allclose(xv, torch.tensor([[3.0, 2e8]]))  # constant feature: std clamped to 1e-8
    assert x_train[0, 0] == 1.0  # inputs untouched


def test_syn_problems() -> None:
    x, y = make_syn1(7)
    assert x.shape == (100, 3) and y.shape == (100,)
    w_star, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(x @ w_star, y, atol=1e-10)  # noiseless linear teacher
    assert np.array_equal(make_syn1(7)[0], x) and not np.array_equal(make_syn1(8)[0], x)
    x2, y2 = make_syn2(7)
    assert x2.shape == (100, 1) and y2.shape == (100,)
    np.testing.assert_allclose(y2 / x2[:, 0], np.full(100, y2[0] / x2[0, 0]))  # one scalar w*
    task = get_task("syn1")
    rows = {tuple(r) for r in np.float32(make_syn1(0)[0]).tolist()}
    assert all(tuple(r) in rows for r in task.x_train.tolist() + task.x_val.tolist())


def test_make_shapes() -> None:
    images, labels = make_shapes(50, seed=5)
    assert images.shape == (50, 1, 16, 16) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [5] * len(SHAPE_CLASSES)
    again, _ = make_shapes(50, seed=5)
    assert np.array_equal(images, again) and not np.array_equal(images, make_shapes(50, seed=6)[0])


def test_text_encoding() -> None:
    ids = encode("Az~ \n\té")
    assert ids.tolist() == [33, 90, 94, 0, 95, UNKNOWN_ID, UNKNOWN_ID]
    assert VOCAB_SIZE == 97 and decode(ids) == "Az~ \n\ufffd\ufffd"
    assert decode(encode(VOCAB)) == VOCAB


def test_stdlib_docstrings_on_a_tiny_library(tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text(
        '"""Module b."""\nclass C:\n    """Class C."""\n    def f(self):\n        """Method f."""\n'
        'if True:\n    def g():\n        "G."\n'
    )
    (tmp_path / "a.py").write_text('def h():\n    """H\n    indented."""\n')
    (tmp_path / "broken.py").write_text('"""Never read."""\ndef (:\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.py").write_text('"""Skipped test module."""\n')
    expected = "H\nindented.\n\nModule b.\n\nClass C.\n\nMethod f.\n\nG."
    assert stdlib_docstrings(1000, tmp_path) == expected
    assert stdlib_docstrings(12, tmp_path) == expected[:12]


def test_stdlib_chars_windows_are_shifted_by_one() -> None:
    task = get_task("stdlib-chars")
    assert torch.equal(task.y_train[:, :-1], task.x_train[:, 1:])
    assert torch.equal(task.y_train[:-1, -1], task.x_train[1:, 0])  # non-overlapping, contiguous
    assert torch.equal(task.y_train[-1, -1], task.x_val[0, 0])
    small = get_task("stdlib-chars-small")  # the same text, its first 3000 windows
    assert torch.equal(small.x_train, task.x_train[:2500])
    assert torch.equal(small.x_val, task.x_train[2500:3000])


# --- IDX files ---------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, code: int) -> None:
    """IDX: 0x00 0x00, type code, ndim, then big-endian uint32 dims, then big-endian data."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[code]
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    cases = [
        (rng.integers(0, 256, (3, 28, 28)).astype(np.uint8), 0x08),
        (np.array([1, -2, 70000], dtype=np.int32), 0x0C),
        (rng.standard_normal((4, 5)).astype(np.float32), 0x0D),
    ]
    for i, (array, code) in enumerate(cases):
        path = tmp_path / f"a{i}-idx{array.ndim}-ubyte{suffix}"
        _write_idx(path, array, code)
        back = read_idx(path)
        assert back.dtype == array.dtype and back.dtype.isnative and np.array_equal(back, array)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"P5\n28 28\n255\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "x")
    _write_idx(tmp_path / "y", np.zeros((2, 3), np.uint8), 0x08)
    (tmp_path / "y").write_bytes((tmp_path / "y").read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        read_idx(tmp_path / "y")


def _write_mnist(folder: Path, n_train: int, n_val: int, suffix: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
        IDX_FILES[1]: np.arange(n_train, dtype=np.uint8) % 10,
        IDX_FILES[2]: rng.integers(0, 256, (n_val, 28, 28)).astype(np.uint8),
        IDX_FILES[3]: (np.arange(n_val, dtype=np.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        _write_idx(folder / (name + suffix), array, 0x08)
    return arrays


@pytest.mark.parametrize(
    "name, subfolder, suffix",
    [("mnist", "mnist", ".gz"), ("mnist", "MNIST/raw", ""), ("fashion-mnist", "fashion-mnist", ""),
     ("fashion-mnist", "FashionMNIST/raw", ".gz"), ("mnist", ".", "")],
)  # fmt: skip
def test_idx_tasks_from_a_folder(tmp_path: Path, name: str, subfolder: str, suffix: str) -> None:
    arrays = _write_mnist(tmp_path / "data" / subfolder, 20, 6, suffix)
    task = get_task(name, tmp_path / "data")
    assert (task.split, task.spec.input_shape, task.spec.num_outputs) == ("train", (1, 28, 28), 10)
    assert task.x_train.shape == (20, 1, 28, 28) and task.x_val.shape == (6, 1, 28, 28)
    assert torch.equal(task.y_train, torch.as_tensor(arrays[IDX_FILES[1]], dtype=torch.int64))
    assert torch.equal(task.y_val, torch.as_tensor(arrays[IDX_FILES[3]], dtype=torch.int64))
    raw = torch.as_tensor(arrays[IDX_FILES[0]], dtype=torch.float32)
    expected = (raw - raw.mean()) / raw.std(correction=0)
    assert torch.allclose(task.x_train[:, 0], expected, atol=1e-5)


# --- CIFAR python batches ----------------------------------------------------------------------


def _write_cifar_batch(path: Path, batch: dict) -> None:
    """Pickle as the published batches are: numpy 1's module path for the array reconstructor
    (protocol 3 writes globals as plain text lines, so the rename keeps the pickle valid)."""
    blob = pickle.dumps(batch, protocol=3)
    path.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def _cifar_data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072)).astype(np.uint8)


def test_read_cifar_batch(tmp_path: Path) -> None:
    data = _cifar_data(4, 0)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4, 1], b"data": data,
             b"filenames": [b"a.png"] * 4}  # fmt: skip
    _write_cifar_batch(tmp_path / "data_batch_1", batch)
    assert b"numpy.core.multiarray" in (tmp_path / "data_batch_1").read_bytes()
    images, labels = read_cifar_batch(tmp_path / "data_batch_1")
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [3, 1, 4, 1]
    # row layout: 1024 red, 1024 green, 1024 blue values, each image row-major
    assert images[2, 1, 5, 7] == data[2, 1024 + 5 * 32 + 7]


def test_cifar_tasks_from_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i, name in enumerate(CIFAR10_FILES):
        labels = [(i + j) % 10 for j in range(3)]
        _write_cifar_batch(folder / name, {b"data": _cifar_data(3, i), b"labels": labels})
    task = get_task("cifar10", tmp_path)
    assert (task.split, task.spec.input_shape, task.spec.num_outputs) == ("train", (3, 32, 32), 10)
    assert len(task.x_train) == 15 and len(task.x_val) == 3
    assert task.y_val.tolist() == [5, 6, 7] and task.y_train[:6].tolist() == [0, 1, 2, 1, 2, 3]
    mean = task.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)

    folder = tmp_path / "c100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 5), ("test", 2)):
        fine = [99 - j for j in range(n)]
        batch = {b"data": _cifar_data(n, n), b"fine_labels": fine, b"coarse_labels": [0] * n}
        _write_cifar_batch(folder / name, batch)
    task = get_task("cifar100", tmp_path / "c100")
    assert (task.split, task.spec.num_outputs) == ("heldout", 100)
    assert task.y_train.tolist() == [99, 98, 97, 96, 95] and task.y_val.tolist() == [99, 98]


class Payload:  # any class a pickle might name
    pass


def test_cifar_unpickler_refuses_other_classes(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _cifar_data(1, 0), b"labels": [Payload()]}, protocol=3))
    with pytest.raises(pickle.UnpicklingError, match="Payload"):
        read_cifar_batch(path)
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        read_cifar_batch(path)
    assert not (tmp_path / "pwned").exists()


# --- missing data ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILE_BASED)
def test_missing_data_dir(name: str) -> None:
    with pytest.raises(DataFilesNotFoundError, match="data_dir"):
        get_task(name)


def test_missing_files_name_folders_and_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path / "mnist", 2, 2, "")
    (tmp_path / "mnist" / IDX_FILES[3]).unlink()
    with pytest.raises(DataFilesNotFoundError) as err:
        get_task("mnist", tmp_path)
    message = str(err.value)
    assert all(n in message for n in IDX_FILES) and ".gz" in message
    assert str(tmp_path / "mnist") in message and str(tmp_path / "MNIST" / "raw") in message
    assert isinstance(err.value, ConfigError) and isinstance(err.value, FileNotFoundError)
    with pytest.raises(DataFilesNotFoundError) as err:
        get_task("cifar10", tmp_path)
    message = str(err.value)
    assert all(n in message for n in CIFAR10_FILES) and str(tmp_path / "cifar-10-batches-py") in message
