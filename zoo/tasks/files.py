"""File-based tasks: MNIST and Fashion-MNIST from their IDX files, CIFAR-10 and CIFAR-100 from
their "python version" batches, read from a local folder (`data_dir`) since nothing is downloaded.
Part of **zoo**. The official test set is each task's val part; inputs are standardized per channel
with training statistics.

The CIFAR batches are pickles by the data set's own definition (a dict of a uint8 numpy array and
lists, written by Python 2). They are read with a restricted unpickler that rebuilds only those
types and refuses every other class or function a file names.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np
import torch

from weightcast.zoo.config import ConfigError
from weightcast.zoo.tasks.base import Task, TaskSpec, standardize
from weightcast.zoo.tasks.registry import TASKS

__all__ = [
    "DataFilesNotFoundError",
    "IDX_FILES",
    "CIFAR10_FILES",
    "CIFAR100_FILES",
    "read_idx",
    "read_cifar_batch",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
]

# train images, train labels, test images, test labels; each may also be gzipped (+ ".gz")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")

# IDX type code (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


class DataFilesNotFoundError(ConfigError, FileNotFoundError):
    """A file-based task found no folder holding all of its files (or got no `data_dir`); the
    message names the folders searched and the files expected. Catch it as either parent."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (plain or gzipped), in native byte order."""
    path = Path(path)
    with path.open("rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    with (gzip.open(path, "rb") if gzipped else path.open("rb")) as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path} is not an IDX file: it must start with two zero bytes, a type code in "
            f"{[hex(c) for c in _IDX_DTYPES]} and the number of dimensions"
        )
    ndim, offset = raw[3], 4 + 4 * raw[3]
    if len(raw) < offset:
        raise ValueError(f"{path}: IDX header announces {ndim} dimensions but the file ends first")
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    if len(raw) - offset != math.prod(shape) * dtype.itemsize:
        raise ValueError(
            f"{path}: IDX header says shape {shape} of {dtype.name} "
            f"({math.prod(shape) * dtype.itemsize} bytes) but {len(raw) - offset} data bytes follow"
        )
    return np.frombuffer(raw, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def read_cifar_batch(path: str | Path, label_key: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one CIFAR python batch. Labels are
    `label_key` (default: b'fine_labels' when present, as in CIFAR-100, else b'labels')."""
    with Path(path).open("rb") as f:
        batch = _CifarUnpickler(f).load()
    if not isinstance(batch, dict) or not isinstance(batch.get(b"data"), np.ndarray):
        raise ValueError(f"{path} is not a CIFAR python batch: expected a dict with a b'data' array")
    key = label_key or (b"fine_labels" if b"fine_labels" in batch else b"labels")
    if key not in batch:
        raise ValueError(f"{path} has no {key!r} entry; its keys are {sorted(batch)}")
    data, labels = batch[b"data"], np.asarray(batch[key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each image row-major.
    return data.reshape(-1, 3, 32, 32), labels


@TASKS.register("mnist", modality="vision", split="train", input_kind="image", needs_data_dir=True)
def mnist(data_dir: str | None) -> Task:
    """MNIST digits from IDX files in data_dir/mnist, data_dir/MNIST/raw or data_dir itself."""
    return _idx_task("mnist", data_dir, ("mnist", "MNIST/raw"))


@TASKS.register("fashion-mnist", modality="vision", split="train", input_kind="image", needs_data_dir=True)
def fashion_mnist(data_dir: str | None) -> Task:
    """Fashion-MNIST from IDX files in data_dir/fashion-mnist, data_dir/FashionMNIST/raw or
    data_dir itself (IDX files do not say which data set they hold: point data_dir at the right one)."""
    return _idx_task("fashion-mnist", data_dir, ("fashion-mnist", "FashionMNIST/raw"))


@TASKS.register("cifar10", modality="vision", split="train", input_kind="image", needs_data_dir=True)
def cifar10(data_dir: str | None) -> Task:
    """CIFAR-10 from data_dir/cifar-10-batches-py (or data_dir itself): 50000 train / 10000 val."""
    folder = _find_folder("cifar10", data_dir, ("cifar-10-batches-py",), CIFAR10_FILES, gzip_ok=False)
    train = [read_cifar_batch(folder / name, b"labels") for name in CIFAR10_FILES[:-1]]
    x_train, y_train = (np.concatenate(parts) for parts in zip(*train))
    x_val, y_val = read_cifar_batch(folder / "test_batch", b"labels")
    return _image_task("cifar10", "train", folder, 10, x_train, y_train, x_val, y_val)


@TASKS.register("cifar100", modality="vision", split="heldout", input_kind="image", needs_data_dir=True)
def cifar100(data_dir: str | None) -> Task:
    """CIFAR-100 (fine labels) from data_dir/cifar-100-python (or data_dir itself): 50000 train /
    10000 val."""
    folder = _find_folder("cifar100", data_dir, ("cifar-100-python",), CIFAR100_FILES, gzip_ok=False)
    x_train, y_train = read_cifar_batch(folder / "train", b"fine_labels")
    x_val, y_val = read_cifar_batch(folder / "test", b"fine_labels")
    return _image_task("cifar100", "heldout", folder, 100, x_train, y_train, x_val, y_val)


class _CifarUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes, str, int and numpy arrays; refuses any other global."""

    # numpy pickles arrays as _reconstruct(ndarray, shape, dtype) + state; the function moved from
    # numpy.core to numpy._core in numpy 2, and the CIFAR files (numpy 1) name the old module.
    _reconstruct = np.zeros(1).__reduce__()[0]
    _allowed = {
        **{(m, t.__name__): t for m in ("builtins", "__builtin__") for t in (dict, list, bytes, str, int)},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    }

    def __init__(self, file: BinaryIO):
        # encoding="bytes": the Python 2 str of the batches (keys, image bytes) stay bytes.
        super().__init__(file, encoding="bytes")

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only dicts, lists, bytes, "
                "str, int and numpy uint8 arrays"
            ) from None


def _find_folder(
    task: str, data_dir: str | None, subfolders: Sequence[str], names: Sequence[str], gzip_ok: bool
) -> Path:
    """The first of data_dir/<subfolder>..., data_dir that holds every file of `names`."""
    expected = ", ".join(names) + (" (each plain or .gz)" if gzip_ok else "")
    if data_dir is None:
        raise DataFilesNotFoundError(
            f"task {task!r} reads local files: set data_dir to a folder holding {expected} "
            f"(or a subfolder {' or '.join(subfolders)} of it)"
        )
    root = Path(data_dir)
    candidates = [root / sub for sub in subfolders] + [root]
    suffixes = ("", ".gz") if gzip_ok else ("",)
    for folder in candidates:
        if all(any((folder / (n + s)).is_file() for s in suffixes) for n in names):
            return folder
    raise DataFilesNotFoundError(
        f"task {task!r} needs the files {expected}; no folder had all of them. Searched: "
        + ", ".join(str(c) for c in candidates)
    )


def _idx_task(name: str, data_dir: str | None, subfolders: Sequence[str]) -> Task:
    folder = _find_folder(name, data_dir, subfolders, IDX_FILES, gzip_ok=True)
    x_train, y_train, x_val, y_val = (
        read_idx(folder / n if (folder / n).is_file() else folder / (n + ".gz")) for n in IDX_FILES
    )
    for images, labels in ((x_train, y_train), (x_val, y_val)):
        if images.ndim != 3 or labels.shape != (len(images),):
            raise ValueError(
                f"{folder}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}"
            )
    # (N, H, W) -> (N, 1, H, W)
    return _image_task(name, "train", folder, 10, x_train[:, None], y_train, x_val[:, None], y_val)


def _image_task(
    name: str,
    split: str,
    folder: Path,
    num_classes: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> Task:
    """Task from uint8 images (N, C, H, W) and labels, standardized per channel."""
    for labels in (y_train, y_val):
        if labels.size and not 0 <= labels.min() <= labels.max() < num_classes:
            raise ValueError(
                f"{folder}: {name} labels must lie in [0, {num_classes}), "
                f"got [{labels.min()}, {labels.max()}]"
            )
    xt, xv = standardize(x_train, x_val, (0, 2, 3))
    return Task(
        name=name,
        modality="vision",
        split=split,
        spec=TaskSpec("image", tuple(x_train.shape[1:]), num_classes, "classification"),
        x_train=xt,
        y_train=torch.as_tensor(y_train.astype(np.int64)),
        x_val=xv,
        y_val=torch.as_tensor(y_val.astype(np.int64)),
        description=f"{name} read from {folder}; official test set as val, standardized per channel",
    )
