"""The training loop of the train_predictor stage: fit one predictor (one kind, one layer type) on a
stream of (window, target) batches with a zoo optimizer (Adam by default), validate it every
`eval_every` steps on fixed held-out windows, checkpoint it every `checkpoint_every` steps, resume
from the latest checkpoint after a kill, and return it with its best-by-validation-loss weights.

Under torchrun (`torch.distributed` initialized) the loss is wrapped in DistributedDataParallel, so
gradients are averaged over ranks; every rank must get the same number of batches (see
`data.train_batches`). Only rank 0 validates, writes checkpoints and logs; checkpoints must be on a
filesystem every rank sees (they are read by every rank on resume).

A checkpoint is a folder `<checkpoints>/step-<8 digits>/` with `tensors.safetensors` (the weights
`model/<name>`, the best weights so far `best/<name>`, the optimizer's tensors
`optimizer/<param index>/<name>`) and `state.json` (step, best step and loss, the optimizer's
param groups and non-tensor state, and a fingerprint of what is being fitted). It is written under a
temporary name and renamed, so a kill never leaves a half checkpoint; older ones are then deleted.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from weightcast.errors import WeightcastError
from weightcast.zoo.config import ConfigError
from weightcast.zoo.optim import SCHEDULES, OptimizerConfig, ScheduleConfig, build_optimizer
from weightcast.zoo.rundir import write_json_atomic

from weightcast.train_predictor.data import Batch, Windows
from weightcast.train_predictor.predictors import Predictor

__all__ = [
    "FitSettings",
    "FitResult",
    "NoTrainingData",
    "fit",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
]

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


class NoTrainingData(WeightcastError, RuntimeError):
    """The batch stream of some rank was empty: nothing to fit for this layer type."""


@dataclass
class FitSettings:
    steps: int
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # over steps (steps_per_epoch = 1)
    eval_every: int = 100
    checkpoint_every: int = 100
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = False
    desc: str = ""  # progress bar label, e.g. "wnn/conv"
    eval_batch_size: int = 65536  # windows per validation forward


@dataclass
class FitResult:
    predictor: Predictor  # on the CPU, with the best weights (the last ones without validation)
    start_step: int  # the checkpoint step this invocation resumed from (0: a fresh start)
    best_step: int
    best_loss: float | None  # validation loss at best_step (None without validation)


def fit(
    predictor: Predictor,
    make_batches: Callable[[int], Iterable[Batch]],
    validation: Windows | None,
    settings: FitSettings,
    checkpoints: str | Path,
    *,
    fingerprint: dict[str, Any] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    loss: Callable[[Predictor, Any], Tensor] | None = None,
    evaluate_fn: Callable[[Predictor, Any], dict[str, float]] | None = None,
) -> FitResult:
    """Fit `predictor` for `settings.steps` steps in total, resuming from the latest checkpoint in
    `checkpoints` (whose `fingerprint` must match). `make_batches(start_step)` gives the batch
    stream of this invocation. `log` gets one row per validation (rank 0). Raises `NoTrainingData`
    when a rank's stream is empty.

    Batches are (windows, targets) scored by `predictor.loss` and `validation` is `Windows` scored
    by `evaluate`, unless `loss(predictor, batch)` and `evaluate_fn(predictor, validation)` (whose
    dict has a "loss") say otherwise: the `nino` graph network trains on whole-model samples
    (`graph_data`)."""
    run = _FitRun(predictor, validation, settings, Path(checkpoints), _json_roundtrip(fingerprint or {}), log)
    run.loss_fn, run.evaluate_fn = loss or _window_loss, evaluate_fn
    start = run.resume()
    if start < settings.steps:
        run.train(make_batches(start), start)
    return run.result(start)


def evaluate(
    predictor: Predictor,
    windows: Windows,
    *,
    horizons: Sequence[int] | None = None,
    horizon: int | None = None,
    batch_size: int = 65536,
) -> dict[str, float]:
    """Errors of `predictor` on `windows`, in raw weight units, of the prediction at `horizon`
    (default: its main horizon `predictor.horizon`): `mae`, `mse`; plus `loss` (its training
    objective) when it is trainable and the windows' horizons are its own. `horizons` are those of
    the windows' target columns (default: the predictor's own; a baseline scored on another
    predictor's windows must pass them). Computed on the predictor's device, accumulated in float64.
    A per-tensor predictor (NiNo) standardizes each batch of `batch_size` windows as one tensor."""
    if not len(windows):
        raise ValueError("no windows to evaluate on")
    horizons = tuple(predictor.horizons if horizons is None else horizons)
    horizon = predictor.horizon if horizon is None else horizon
    if horizon not in horizons:
        raise ValueError(f"horizon {horizon} is not one of the windows' target horizons {horizons}")
    column = horizons.index(horizon)  # the target column of the scored horizon
    with_loss = predictor.trainable and horizons == tuple(predictor.horizons)
    param = next(predictor.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    abs_sum = sq_sum = loss_sum = 0.0
    with torch.no_grad():
        for inputs, targets in zip(windows.inputs.split(batch_size), windows.targets.split(batch_size)):
            inputs, targets = inputs.to(device), targets.to(device)
            error = predictor.predict(inputs, horizon).double() - targets[:, column].double()  # (n,)
            abs_sum += error.abs().sum().item()
            sq_sum += error.square().sum().item()
            if with_loss:
                loss_sum += predictor.loss(inputs, targets).item() * len(inputs)
    count = len(windows)
    metrics = {"mae": abs_sum / count, "mse": sq_sum / count}
    if with_loss:
        metrics = {"loss": loss_sum / count, **metrics}
    return metrics


def save_checkpoint(
    folder: str | Path,
    step: int,
    predictor: Predictor,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, Tensor] | None,
    extra: dict[str, Any],
) -> Path:
    """Write `<folder>/step-<step>/` atomically (temporary folder, then rename), then delete the
    older checkpoints of `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step:08d}"
    tmp = folder / f".tmp-step-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    optim = optimizer.state_dict()
    tensors = {f"model/{k}": v for k, v in predictor.state_dict().items()}
    tensors.update({f"best/{k}": v for k, v in (best_state or {}).items()})
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optim["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / TENSORS_FILE)
    state = {
        "step": step,
        **extra,
        "has_best": best_state is not None,
        "optimizer": {"param_groups": optim["param_groups"], "state": scalars},
    }
    if not math.isfinite(state.get("best_loss", 0.0)):
        state["best_loss"] = None  # JSON has no Infinity
    write_json_atomic(tmp / STATE_FILE, state)
    if final.exists():  # the same step written again (a resumed run that ended at a checkpoint step)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in folder.iterdir():
        match = _STEP_DIR.match(old.name)
        if match and int(match.group(1)) < step:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    predictor: Predictor,
    optimizer: torch.optim.Optimizer,
    fingerprint: dict[str, Any],
) -> tuple[int, int, float, dict[str, Tensor] | None]:
    """Load a checkpoint folder into `predictor` and `optimizer`; returns (step, best step, best
    validation loss (inf if none), best weights or None). Raises `ConfigError` if the checkpoint
    was made for something else (another fingerprint)."""
    path = Path(path)
    state = json.loads((path / STATE_FILE).read_text())
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(
            f"checkpoint {path} was made for {state.get('fingerprint')}, not for {fingerprint}; "
            f"choose another out_dir or delete {path.parent} to start over"
        )
    device = next(predictor.parameters()).device
    tensors = load_file(path / TENSORS_FILE, device=str(device))
    predictor.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
    optim_state: dict[int, dict[str, Any]] = {int(i): dict(s) for i, s in state["optimizer"]["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            optim_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer"]["param_groups"]})
    best_loss = state["best_loss"] if state["best_loss"] is not None else math.inf
    return state["step"], state["best_step"], best_loss, best if state["has_best"] else None


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The complete checkpoint of `folder` with the highest step, or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return max(steps)[1] if steps else None


class _FitRun:
    """One invocation of `fit`: the predictor, its optimizer and the best weights so far. Every rank
    trains (under torchrun, DistributedDataParallel syncs the gradients); rank 0 alone validates,
    logs and writes checkpoints."""

    def __init__(
        self,
        predictor: Predictor,
        validation: Windows | None,
        settings: FitSettings,
        checkpoints: Path,
        fingerprint: dict[str, Any],
        log: Callable[[dict[str, Any]], None] | None,
    ):
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.predictor = predictor.to(settings.device)
        self.optimizer = build_optimizer(predictor.parameters(), settings.optimizer)
        self.validation = validation if validation is not None and len(validation) > 0 else None
        self.settings, self.checkpoints, self.fingerprint, self.log = settings, checkpoints, fingerprint, log
        self.best_step, self.best_loss, self.best_state = 0, math.inf, None
        self.loss_fn: Callable[[Predictor, Any], Tensor] = _window_loss
        self.evaluate_fn: Callable[[Predictor, Any], dict[str, float]] | None = None

    def resume(self) -> int:
        """Load the latest checkpoint and return its step; or, on a fresh start, clear what a kill
        left half-written and return 0."""
        latest = latest_checkpoint(self.checkpoints)
        if latest is None:
            if self.rank == 0:
                _remove_stale(self.checkpoints)
            return 0
        start, self.best_step, self.best_loss, self.best_state = load_checkpoint(
            latest, self.predictor, self.optimizer, self.fingerprint
        )
        return start

    def train(self, batches: Iterable[Batch], start: int) -> None:
        """Steps `start + 1` to `settings.steps`, validating every `eval_every` steps and writing a
        checkpoint every `checkpoint_every` steps (and both at the last step)."""
        settings, device = self.settings, self.settings.device
        objective = self._objective()
        batches = iter(batches)
        first = next(batches, None)
        if not _all_ranks(first is not None, device):
            raise NoTrainingData(f"{settings.desc or 'this predictor'}: no training windows on some rank")
        if self.rank == 0 and start == 0 and self.validation is not None:
            self.validate(0, None)  # the untrained weights: a candidate, and the start of the curve
        stream = itertools.chain([first], batches)
        bar = tqdm(
            total=settings.steps, initial=start, desc=settings.desc, unit="step",
            disable=not (settings.progress and self.rank == 0), dynamic_ncols=True, leave=False,
        )
        loss_sum, loss_count = torch.zeros((), device=device), 0  # since the last validation
        multiplier = SCHEDULES.get(settings.schedule.name)(settings.schedule, settings.steps, 1)
        for step in range(start + 1, settings.steps + 1):
            batch = next(stream, None)
            if batch is None:
                raise RuntimeError(f"{settings.desc}: batches ran out at step {step} of {settings.steps}")
            loss = self._step(objective, batch, settings.optimizer.lr * multiplier(step - 1))
            loss_sum, loss_count = loss_sum + loss, loss_count + 1  # summed on device: no host sync per step
            bar.update(1)
            if step % 10 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{loss.item():.4g}")
            if self.rank != 0:
                continue
            if step % settings.eval_every == 0 or step == settings.steps:
                self.validate(step, loss_sum.item() / loss_count)
                loss_sum, loss_count = torch.zeros((), device=device), 0
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                self.checkpoint(step)
        bar.close()

    def validate(self, step: int, train_loss: float | None) -> None:
        """Log a row for `step`; with validation windows, score the weights and keep them if best."""
        row: dict[str, Any] = {"step": step, "train_loss": train_loss}
        if self.validation is not None:
            metrics = (
                self.evaluate_fn(self.predictor, self.validation)
                if self.evaluate_fn is not None
                else evaluate(self.predictor, self.validation, batch_size=self.settings.eval_batch_size)
            )
            if metrics["loss"] < self.best_loss:
                self.best_step, self.best_loss = step, metrics["loss"]
                self.best_state = {k: v.detach().clone() for k, v in self.predictor.state_dict().items()}
            row.update({f"val_{k}": v for k, v in metrics.items()}, best_step=self.best_step)
        if self.log is not None:
            self.log(row)

    def checkpoint(self, step: int) -> None:
        extra = {"best_step": self.best_step, "best_loss": self.best_loss, "fingerprint": self.fingerprint}
        save_checkpoint(self.checkpoints, step, self.predictor, self.optimizer, self.best_state, extra)

    def result(self, start: int) -> FitResult:
        """The predictor on the CPU with the best weights (the last ones when nothing was validated)."""
        best_step = self.best_step
        if self.best_state is not None:
            self.predictor.load_state_dict(self.best_state)
        else:
            best_step = self.settings.steps
        best_loss = self.best_loss if math.isfinite(self.best_loss) else None
        return FitResult(self.predictor.cpu(), start, best_step, best_loss)

    def _objective(self) -> nn.Module:
        objective = _Objective(self.predictor, self.loss_fn)
        if not dist.is_initialized():
            return objective
        device = self.settings.device
        device_ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(objective, device_ids=device_ids)

    def _step(self, objective: nn.Module, batch: Batch, lr: float) -> Tensor:
        """One optimizer step at learning rate `lr` (a function of the step alone: nothing to resume)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = objective(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class _Objective(nn.Module):
    """The predictor's training loss as `forward`, so DistributedDataParallel sees (and syncs) it."""

    def __init__(self, predictor: Predictor, loss: Callable[[Predictor, Any], Tensor]):
        super().__init__()
        self.predictor, self.loss = predictor, loss

    def forward(self, batch: Any) -> Tensor:
        return self.loss(self.predictor, batch)


def _window_loss(predictor: Predictor, batch: Batch) -> Tensor:
    """The predictor's own loss on a (windows, targets) batch, moved to its device."""
    device = next(predictor.parameters()).device
    window, target = (t.to(device, non_blocking=True) for t in batch)
    return predictor.loss(window, target)


def _all_ranks(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every rank (itself when not distributed)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _remove_stale(folder: Path) -> None:
    """Delete temporary checkpoint folders that a kill left behind."""
    if folder.is_dir():
        for path in folder.glob(".tmp-step-*"):
            shutil.rmtree(path, ignore_errors=True)


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj))
