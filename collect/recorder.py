"""The recording hook of collect: while a run trains, every snapshot of every parameter goes to a raw
spool file on local disk, so RAM holds only the current weights, never the history.

Spool layout: snapshots are fixed-size rows, one after another; a row is every parameter's bytes
in `named_parameters()` order, in the collection dtype. After training, `read(i)` gathers parameter
i's slice of every row into a (T, *shape) tensor: one parameter's history in memory at a time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from weightcast.zoo.layer_types import layer_types
from weightcast.zoo.train import Hook, TrainState, steps_per_epoch

from weightcast.collect.errors import CollectError, disk_full_is_fatal

__all__ = ["ParamInfo", "Recorder"]


@dataclass(frozen=True)
class ParamInfo:
    name: str
    index: int  # position in named_parameters()
    layer_type: str
    shape: tuple[int, ...]
    offset: int  # byte offset of this parameter within a spool row

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Recorder(Hook):
    """Snapshots the weights before training, after every epoch and (with `every_steps`) every N
    optimizer steps; the epoch (fractional between epoch ends) and step of each snapshot are kept.

    A run that diverges keeps its snapshots up to the end of the last finite epoch."""

    def __init__(self, spool_path: str | Path, dtype: torch.dtype = torch.float32, every_steps: int = 0):
        self.path = Path(spool_path)
        self.dtype = dtype
        self.every_steps = every_steps
        self.itemsize = torch.empty((), dtype=dtype).element_size()
        self.params: list[ParamInfo] = []
        self.epochs: list[float] = []
        self.steps: list[int] = []
        self.row_bytes = 0
        self._file = None
        self._steps_per_epoch = 1

    def on_train_start(self, state: TrainState) -> None:
        types = layer_types(state.model)
        offset = 0
        for index, (name, param) in enumerate(state.model.named_parameters()):
            self.params.append(ParamInfo(name, index, types[name], tuple(param.shape), offset))
            offset += param.numel() * self.itemsize
        self.row_bytes = offset
        self._steps_per_epoch = steps_per_epoch(state.config, state.task)  # as the training loop
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb", buffering=1 << 20)
        self._snapshot(state, 0.0)

    def on_step_end(self, state: TrainState, loss: torch.Tensor) -> None:
        # Epoch-end steps are left to on_epoch_end, so that no step is recorded twice.
        if self.every_steps and state.step % self.every_steps == 0 and state.step % self._steps_per_epoch:
            self._snapshot(state, state.step / self._steps_per_epoch)

    def on_epoch_end(self, state: TrainState) -> None:
        self._snapshot(state, float(state.epoch))

    def on_train_end(self, state: TrainState) -> None:
        if state.history.diverged:  # drop step snapshots of the epoch that diverged
            keep = sum(1 for e in self.epochs if e <= state.epoch - 1)
            del self.epochs[keep:], self.steps[keep:]
        self._close()
        if self.path.exists():
            os.truncate(self.path, len(self.epochs) * self.row_bytes)

    def read(self, index: int) -> torch.Tensor:
        """Parameter `index`'s history, (T, *shape) in the recording dtype."""
        info = self.params[index]
        nbytes = info.numel * self.itemsize
        count = len(self.epochs)
        out = bytearray(count * nbytes)
        view = memoryview(out)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for t in range(count):  # one row slice per snapshot: (nbytes,) at row t
                got = os.preadv(fd, [view[t * nbytes : (t + 1) * nbytes]], t * self.row_bytes + info.offset)
                if got != nbytes:
                    raise CollectError(f"spool file {self.path} is shorter than its {count} snapshots")
        finally:
            os.close(fd)
        if not out:
            return torch.empty((count, *info.shape), dtype=self.dtype)
        return torch.frombuffer(out, dtype=torch.uint8).view(self.dtype).view(count, *info.shape)

    def remove(self) -> None:
        """Close and delete the spool file."""
        self._close()
        self.path.unlink(missing_ok=True)

    def _snapshot(self, state: TrainState, epoch: float) -> None:
        with disk_full_is_fatal(self.path), torch.no_grad():
            for param in state.model.parameters():
                # (numel,) bytes of the parameter in the recording dtype; no copy for fp32 on CPU.
                flat = param.detach().to(dtype=self.dtype).reshape(-1).cpu().contiguous()
                self._file.write(flat.view(torch.uint8).numpy())
        self.epochs.append(epoch)
        self.steps.append(state.step)

    def _close(self) -> None:
        if self._file is not None:
            with disk_full_is_fatal(self.path):
                self._file.close()
            self._file = None
