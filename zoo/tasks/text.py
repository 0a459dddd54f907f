"""Built-in character-level language modelling tasks on Python's own standard library: text that
every Python installation ships, so the tasks need no download. Part of **zoo**.
- `stdlib-chars`, `stdlib-chars-small`: the docstrings; `heldout`, for zero-shot evaluation.
- `stdlib-code-chars`: the code with docstrings and comments removed; `train`, so a zoo can hold a
  language model without touching the held-out text.

The corpus is deterministic for one Python version: the stdlib's .py files in sorted path order
(test folders left out), each file's docstrings in source order. Docstrings change between Python
releases (patch releases included), so the task's exact text, and hence its numbers, depend on
the interpreter that builds it; the description records the version.
"""

from __future__ import annotations

import ast
import os
import platform
import sysconfig
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from weightcast.zoo.tasks.base import Task, TaskSpec
from weightcast.zoo.tasks.registry import TASKS

__all__ = [
    "VOCAB",
    "UNKNOWN_ID",
    "VOCAB_SIZE",
    "SEQ_LEN",
    "encode",
    "decode",
    "stdlib_docstrings",
    "stdlib_chars",
    "stdlib_chars_small",
    "stdlib_code",
    "stdlib_code_chars",
]

# Printable ASCII (95 characters, space to '~') then newline; everything else is UNKNOWN_ID.
VOCAB = "".join(map(chr, range(32, 127))) + "\n"
UNKNOWN_ID = len(VOCAB)  # 96
VOCAB_SIZE = len(VOCAB) + 1  # 97
SEQ_LEN = 64
NUM_WINDOWS = 24_000  # 20000 train + 4000 val windows of SEQ_LEN characters
NUM_WINDOWS_SMALL = 3_000  # 2500 train + 500 val
NUM_WINDOWS_CODE = 6_000  # 5000 train + 1000 val
_SKIPPED_FOLDERS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}


def encode(text: str) -> np.ndarray:
    """Token ids (len(text),) int64 of `text` in `VOCAB`, unknown characters as `UNKNOWN_ID`."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(128, UNKNOWN_ID, dtype=np.int64)
    table[[ord(c) for c in VOCAB]] = np.arange(len(VOCAB))
    return np.where(codes < 128, table[np.minimum(codes, 127)], UNKNOWN_ID)


def decode(ids: np.ndarray | torch.Tensor) -> str:
    """Text of token ids; `UNKNOWN_ID` becomes U+FFFD."""
    return "".join(VOCAB[i] if i < len(VOCAB) else "\ufffd" for i in np.asarray(ids).tolist())


def stdlib_docstrings(max_chars: int, stdlib: str | Path | None = None) -> str:
    """The first `max_chars` characters of the docstrings (module, class, function) of the .py files
    under `stdlib` (default: this interpreter's standard library), files in sorted order, docstrings
    separated by a blank line."""
    files = _source_files(Path(stdlib or sysconfig.get_paths()["stdlib"]))
    return _joined_prefix((doc for path in files for doc in _docstrings(path)), max_chars)


@TASKS.register("stdlib-chars", modality="text", split="heldout", input_kind="tokens", needs_data_dir=False)
def stdlib_chars(data_dir: str | None = None) -> Task:
    """Next-character prediction on windows of 64 characters of stdlib docstrings (vocabulary 97):
    the first 20000 windows train, the last 4000 val (contiguous: val is the last modules' text)."""
    return _stdlib_chars_task("stdlib-chars", NUM_WINDOWS)


@TASKS.register(
    "stdlib-chars-small", modality="text", split="heldout", input_kind="tokens", needs_data_dir=False
)
def stdlib_chars_small(data_dir: str | None = None) -> Task:
    """`stdlib-chars` on its first 3000 windows (2500 train, 500 val): an epoch costs an eighth,
    so the zero-shot suite's text task runs on a CPU."""
    return _stdlib_chars_task("stdlib-chars-small", NUM_WINDOWS_SMALL)


def stdlib_code(max_chars: int, stdlib: str | Path | None = None) -> str:
    """The first `max_chars` characters of the stdlib's code with its docstrings and comments
    removed (each module parsed and unparsed by `ast`), files in the same sorted order: text that
    shares no sentence with `stdlib_docstrings`, so a zoo may train on it while the docstring tasks
    stay held out."""
    trees = map(_parse, _source_files(Path(stdlib or sysconfig.get_paths()["stdlib"])))
    return _joined_prefix((ast.unparse(_without_docstrings(t)) for t in trees if t is not None), max_chars)


@TASKS.register("stdlib-code-chars", modality="text", split="train", input_kind="tokens", needs_data_dir=False)
def stdlib_code_chars(data_dir: str | None = None) -> Task:
    """Next-character prediction on windows of 64 characters of stdlib code without docstrings or
    comments (vocabulary 97; 5000 train, 1000 val windows): the zoo's language-model task, disjoint
    from the held-out docstring tasks."""
    return _char_task("stdlib-code-chars", "train", stdlib_code(NUM_WINDOWS_CODE * SEQ_LEN + 1), "code")


def _stdlib_chars_task(name: str, num_windows: int) -> Task:
    """The first `num_windows` windows of SEQ_LEN characters of docstrings."""
    return _char_task(name, "heldout", stdlib_docstrings(num_windows * SEQ_LEN + 1), "docstrings")


def _char_task(name: str, split: str, text: str, what: str) -> Task:
    """Non-overlapping windows of SEQ_LEN characters of `text`; the last sixth validates."""
    ids = torch.as_tensor(encode(text))
    n_windows = (len(ids) - 1) // SEQ_LEN
    n_val = n_windows // 6
    # Non-overlapping windows; targets are the inputs shifted by one character.
    x = ids[: n_windows * SEQ_LEN].view(n_windows, SEQ_LEN)  # (n_windows, 64)
    y = ids[1 : n_windows * SEQ_LEN + 1].view(n_windows, SEQ_LEN)  # (n_windows, 64)
    n_train = n_windows - n_val
    return Task(
        name=name,
        modality="text",
        split=split,
        spec=TaskSpec("tokens", (SEQ_LEN,), VOCAB_SIZE, "language_model"),
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_val=x[n_train:],
        y_val=y[n_train:],
        description=f"character LM on Python {platform.python_version()} stdlib {what} "
        f"({len(ids)} characters, printable ASCII + newline + unknown)",
    )


def _joined_prefix(texts: Iterable[str], max_chars: int) -> str:
    """The first `max_chars` characters of `texts` joined by blank lines, reading only as many texts
    as that needs (parsing the whole stdlib takes seconds)."""
    pieces: list[str] = []
    length = -2  # of "\n\n".join(pieces)
    for text in texts:
        pieces.append(text)
        length += len(text) + 2
        if length >= max_chars:
            break
    return "\n\n".join(pieces)[:max_chars]


def _source_files(root: Path) -> list[Path]:
    """The .py files under `root` in sorted relative-path order, test and package folders skipped."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in _SKIPPED_FOLDERS]  # prune, don't descend
        rel = Path(folder).relative_to(root)
        found += [(rel / n).as_posix() for n in names if n.endswith(".py")]
    return [root / p for p in sorted(found)]


def _docstrings(path: Path) -> Iterator[str]:
    """Docstrings of the module at `path` and of every class and function in it, in source order;
    nothing for a file that does not parse (a few stdlib files are deliberately broken)."""
    tree = _parse(path)
    if tree is not None:
        yield from _walk_docstrings(tree)


def _parse(path: Path) -> ast.Module | None:
    """The module at `path`, or None for a file that does not parse (a few are deliberately broken)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning: invalid escape sequences in old files
            return ast.parse(path.read_bytes())
    except (SyntaxError, ValueError):
        return None


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """`tree` with the docstring statement of every module, class and function body removed (a
    body left empty gets `pass`)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if ast.get_docstring(node, clean=False) is not None:
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _walk_docstrings(node: ast.AST) -> Iterator[str]:
    # Docstrings live only in statement bodies, so descend through statements and skip expressions
    # (far faster than ast.walk on the whole stdlib).
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc:
            yield doc
    for field in ("body", "orelse", "finalbody", "handlers", "cases"):
        for child in getattr(node, field, ()):
            if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
                yield from _walk_docstrings(child)
