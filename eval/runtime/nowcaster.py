"""The live-training runtime of weightcast's last stage, `eval`: a `Nowcaster` applies a predictor
bundle (`train_predictor`) to any PyTorch training run, the zoo's loop (`eval.hooks.NowcastHook`)
or a plain one. Two lines added to a plain loop, one to create it, one to call it:

    nowcaster = Nowcaster(model, optimizer, "org/wnn-bundle", probe=(x_probe, y_probe, loss_fn))
    for epoch in range(epochs):
        train_one_epoch(model, optimizer)
        nowcaster()  # after every epoch: a snapshot, and every `period` epochs a jump

What a call does. The nowcaster keeps a ring buffer of the last `input_length` snapshots of every
predicted parameter (CPU float32 by default), one preallocated (input_length, N) tensor per layer
type that holds all N scalars of that type's parameters side by side, so one jump is one
chunked `predict` per layer type. The buffer holds the weights at construction and after every
call; windows are taken oldest first. Units are calls: the predictor's horizon is counted in
calls, so call it at the cadence its bundle was trained on (epochs for WNN and LFD-2).

- mode "nowcast" (WNN): every `period` calls (default and minimum: the bundle's window, 5 for
  WNN) the parameters jump to the prediction `horizon` calls ahead (default: the bundle's).
- mode "farcast" (LFD-2): once, after `farcast_after` = n calls (default input_length - 1, so
  that the window is the weights at construction and after each of the n calls, `w_0..w_n` of
  the paper), the parameters jump to the predicted call n + m (m = `horizon`, default the
  bundle's farthest); training then goes on without further jumps.

A jump writes `w + (prediction - last snapshot)` into each parameter: the same as the
prediction, since the last snapshot is the current weights, but a reduced-precision buffer
(float16, bfloat16) only rounds the step, never the weights. After an accepted jump the buffer is
emptied and restarts from the jumped weights: the history before the jump is not the trajectory
of the new weights, so the next window holds only snapshots taken after it (WNN's protocol: train
`period` epochs, jump, repeat). A rolled-back jump keeps the buffer (the weights are back on
their trajectory); either way the next attempt comes `period` calls later.

Guard (on by default, `guard=False` turns it off): the loss on a fixed probe batch is computed
before and after the jump under no_grad, in eval mode except for BatchNorm layers, which
normalize with the probe batch's statistics: their running statistics were gathered under the
pre-jump weights, so in eval mode they would count against every jump (their buffers are
restored after the probe, and every module's train/eval mode too); the jump is kept only if
`after <= before + tolerance * |before|` (tolerance relative, 1% by default) with `after`
finite, else the weights are restored exactly and the rollback is counted. Predictions with NaN
or Inf are never written: the jump is rolled back with a `NowcastWarning` and counted: bad
predicted values never crash the run.

What is left alone: buffers (BatchNorm running statistics; the probe restores them), frozen
parameters (requires_grad=False), parameters of unknown layer type (typed by rank alone in
`zoo.layer_types`; reported in `untouched` with a `NowcastWarning`), the learning-rate schedule.
DistributedDataParallel (and DataParallel) models are unwrapped; every rank computes the same
prediction from the same weights, and the rank-dependent decisions (NaN check, probe loss) are
averaged over ranks with all_reduce, so all ranks keep or roll back together.

Optimizer state after an accepted jump, `optimizer_policy` (only jumped parameters' state):
- "keep" (the papers): unchanged.
- "reset": every tensor in the parameter's state is zeroed, Adam's `step` included, which is
  exactly the state a fresh Adam/AdamW starts from (its bias correction starts over: keeping
  `step` with zeroed moments would inflate the next updates up to ~3x for hundreds of steps);
  for SGD a zero momentum buffer (a fresh one, with dampening 0).
- "rescale": the first-moment buffers (`momentum_buffer` of SGD/RMSprop, `exp_avg` of
  Adam/AdamW/NAdam/RAdam/Adamax) are multiplied by `momentum_scale` (0.5 by default), damping the
  momentum that drove the pre-jump trajectory; second moments (`exp_avg_sq`, ...) and `step` are
  kept, since the gradients' scale changes little over one jump.

Cost: no autograd, windows gathered and predicted `chunk_size` scalars at a time; memory beyond
the model: the buffer (input_length copies, on `buffer_device`), the predicted steps (one float32
copy) and, with the guard on, a backup of the jumped parameters on their device. `stats` counts
calls, jumps attempted / accepted / rolled back (guard, non-finite) and the seconds spent.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from weightcast.errors import WeightcastWarning
from weightcast.train_predictor.bundle import (
    SHIPPED_BUNDLES_DIR,
    SHIPPED_PREFIX,
    MissingPredictorError,
    PredictorBundle,
    load_bundle,
    shipped_bundle_folder,
)
from weightcast.train_predictor.predictors import DEFAULT_CHUNK_SIZE, Predictor
from weightcast.zoo.config import ConfigError
from weightcast.zoo.layer_types import LAYER_TYPES, assign_layer_types

__all__ = [
    "MODES",
    "OPTIMIZER_POLICIES",
    "OUTCOMES",
    "FIRST_MOMENT_KEYS",
    "BUFFER_DTYPES",
    "NowcastConfig",
    "NowcastWarning",
    "Jump",
    "NowcastStats",
    "ProbeLoss",
    "Nowcaster",
    "probe_batch",
    "SHIPPED_PREFIX",
    "SHIPPED_BUNDLES_DIR",
    "DEFAULT_BUNDLE",
    "shipped_bundle_folder",
    "open_bundle",
    "unwrap",
    "apply_optimizer_policy",
]

MODES = ("nowcast", "farcast")
OPTIMIZER_POLICIES = ("keep", "reset", "rescale")
OUTCOMES = ("accepted", "rolled_back_guard", "rolled_back_nonfinite")
# Optimizer-state keys of first-moment (momentum) buffers, the ones "rescale" scales.
FIRST_MOMENT_KEYS = ("momentum_buffer", "exp_avg")
BUFFER_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

# SHIPPED_PREFIX, SHIPPED_BUNDLES_DIR, shipped_bundle_folder: re-exported from train_predictor.bundle.
DEFAULT_BUNDLE = SHIPPED_PREFIX + "wnn"  # what a Nowcaster applies when given no bundle

ProbeLoss = Callable[[nn.Module], Union[float, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]


class NowcastWarning(WeightcastWarning):
    """A jump was rolled back for non-finite predictions, or parameters are left untouched."""


@dataclass
class NowcastConfig:
    """How a `Nowcaster` applies its bundle (see the module docstring). None = from the bundle."""

    mode: str = "nowcast"  # nowcast: jump every `period` calls; farcast: once, after `farcast_after`
    period: Optional[int] = None  # nowcast: calls between jumps, >= the bundle's input_length (its default)
    horizon: Optional[int] = None  # calls ahead a jump goes; default the bundle's horizon (its farthest)
    farcast_after: Optional[int] = None  # farcast: calls before the jump; default input_length - 1
    optimizer_policy: str = "keep"  # keep | reset | rescale
    momentum_scale: float = 0.5  # rescale: factor on the first-moment buffers
    guard: bool = True  # keep a jump only if the probe loss rises by at most `tolerance`
    tolerance: float = 0.01  # relative: after <= before + tolerance * |before|
    buffer_dtype: str = "float32"  # float32 | float64 | float16 | bfloat16
    buffer_device: str = "cpu"
    chunk_size: int = DEFAULT_CHUNK_SIZE  # scalars per predict call
    layer_types: Optional[list[str]] = None  # predict only these layer types; None = all the model has

    def __post_init__(self) -> None:
        choices = (("mode", MODES), ("optimizer_policy", OPTIMIZER_POLICIES), ("buffer_dtype", BUFFER_DTYPES))
        for name, valid in choices:
            if getattr(self, name) not in valid:
                raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {getattr(self, name)!r}")
        for name in ("period", "horizon", "farcast_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or None for the bundle's default), got {value}")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(
                f"tolerance is a relative rise of the probe loss, a number >= 0; got {self.tolerance}"
            )
        if not (math.isfinite(self.momentum_scale) and self.momentum_scale >= 0):
            raise ConfigError(f"momentum_scale must be a number >= 0, got {self.momentum_scale}")
        try:
            torch.device(self.buffer_device)
        except RuntimeError:
            raise ConfigError(
                f"buffer_device must be a torch device (cpu, cuda, cuda:N), got {self.buffer_device!r}"
            ) from None
        if self.layer_types is not None:
            unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
            if unknown or not self.layer_types:
                raise ConfigError(
                    f"layer_types must be a non-empty list of {', '.join(LAYER_TYPES)} (or None for all); "
                    f"got {list(self.layer_types)}"
                )

    def for_bundle(self, bundle: PredictorBundle) -> NowcastConfig:
        """This config with the bundle's defaults filled in, checked against its window."""
        window = bundle.input_length
        period = window if self.period is None else self.period
        if self.mode == "nowcast" and period < window:
            raise ConfigError(
                f"period={period} is shorter than the bundle's window of {window} snapshots: a jump needs "
                f"{window} snapshots taken since the previous jump; use period >= {window}"
            )
        farcast_after = window - 1 if self.farcast_after is None else self.farcast_after
        if self.mode == "farcast" and farcast_after + 1 < window:
            raise ConfigError(
                f"farcast_after={farcast_after} calls give {farcast_after + 1} snapshots (the start and one "
                f"per call), fewer than the bundle's window of {window}; use farcast_after >= {window - 1}"
            )
        horizon = bundle.horizon if self.horizon is None else self.horizon
        return dataclasses.replace(self, period=period, horizon=horizon, farcast_after=farcast_after)


@dataclass
class Jump:
    """One attempted jump: at which call, its outcome (one of `OUTCOMES`), the probe losses."""

    call: int
    outcome: str
    probe_before: Optional[float] = None  # None when the guard is off or predictions were non-finite
    probe_after: Optional[float] = None
    seconds: float = 0.0  # prediction, probes and writing included


@dataclass
class NowcastStats:
    calls: int = 0
    attempted: int = 0
    accepted: int = 0
    rolled_back_guard: int = 0
    rolled_back_nonfinite: int = 0
    seconds: float = 0.0  # total time spent in the nowcaster's calls (and its construction)
    jumps: list[Jump] = field(default_factory=list)


def probe_batch(inputs: Tensor, targets: Tensor, loss_fn: LossFn) -> ProbeLoss:
    """A probe loss for the guard: `loss_fn(model(inputs), targets)` on one fixed batch, moved
    to the model's device when needed."""

    def probe(model: nn.Module) -> float:
        device = next(model.parameters()).device
        return float(loss_fn(model(inputs.to(device)), targets.to(device)))

    return probe


def open_bundle(source: PredictorBundle | str | os.PathLike = DEFAULT_BUNDLE) -> PredictorBundle:
    """A bundle as given, or `load_bundle(source)`: `shipped:<kind>` (a pretrained bundle installed
    with weightcast), a local folder or a Hub repository id ("org/name")."""
    if isinstance(source, PredictorBundle):
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_bundle(source)
    raise TypeError(
        "bundle must be a PredictorBundle, shipped:<kind>, a bundle folder or a Hub repository id; "
        f"got {type(source).__name__}"
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel; any other model as is."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def apply_optimizer_policy(
    optimizer: torch.optim.Optimizer | None,
    params: Iterable[Tensor],
    policy: str,
    momentum_scale: float = 0.5,
) -> None:
    """Apply `policy` (one of `OPTIMIZER_POLICIES`, defined in the module docstring) to the
    optimizer state of `params`; parameters without state are skipped."""
    if policy not in OPTIMIZER_POLICIES:
        raise ConfigError(f"optimizer policy must be one of {', '.join(OPTIMIZER_POLICIES)}; got {policy!r}")
    if policy == "keep" or optimizer is None:
        return
    with torch.no_grad():
        for param in params:
            for key, value in optimizer.state.get(param, {}).items():
                if not torch.is_tensor(value):
                    continue
                if policy == "reset":
                    value.zero_()
                elif key in FIRST_MOMENT_KEYS:
                    value.mul_(momentum_scale)


class Nowcaster:
    """Makes `model`'s parameters jump to `bundle`'s predictions; call it once per epoch (or
    every N steps). See the module docstring for what a call does.

    Args:
        model: any module; DDP / DataParallel wrappers are unwrapped.
        optimizer: its optimizer, whose state `config.optimizer_policy` adjusts (None: keep only).
        bundle: a `PredictorBundle`, `shipped:<kind>` (a pretrained bundle installed with
            weightcast: wnn, lfd2, introspection), a bundle folder or a Hub repository id;
            default the shipped WNN bundle.
        config: how to apply it; default `NowcastConfig()`.
        probe: the guard's loss, a callable `module -> float` (given the unwrapped module, run in
            eval mode under no_grad) or a batch `(inputs, targets, loss_fn)`; required while
            `config.guard` is on.

    Attributes: `predicted` (parameter name -> layer type of every predicted parameter),
    `untouched` (parameter name -> why it is left alone), `stats` (`NowcastStats`)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        bundle: PredictorBundle | str | os.PathLike = DEFAULT_BUNDLE,
        config: NowcastConfig | None = None,
        *,
        probe: ProbeLoss | tuple[Tensor, Tensor, LossFn] | None = None,
    ):
        start = time.perf_counter()
        self.model, self.module, self.optimizer = model, unwrap(model), optimizer
        self.bundle = open_bundle(bundle)
        self.config = (config or NowcastConfig()).for_bundle(self.bundle)
        self.probe = self._check_probe(probe)
        if optimizer is None and self.config.optimizer_policy != "keep":
            raise ConfigError(
                f"optimizer_policy={self.config.optimizer_policy!r} needs the optimizer; got None"
            )
        self.predicted, self.untouched = self._select_parameters()
        self._groups = self._build_groups()
        self._params = [p for group in self._groups for p in group.params]
        self._device = self._params[0].device  # where the all_reduce of rank decisions runs
        self._next = 0  # ring slot the next snapshot goes to
        self._count = 0  # snapshots held, at most input_length
        self._since_attempt = 0  # calls since construction or the last attempted jump
        self._finished = False  # farcast mode: the one jump was attempted
        self.stats = NowcastStats()
        self._snapshot()  # the weights at construction: w_0 of a farcast window
        self.stats.seconds += time.perf_counter() - start

    def __call__(self) -> Jump | None:
        """Take a snapshot of the current weights and, when one is due, attempt a jump; returns
        the attempted jump, or None."""
        start = time.perf_counter()
        self.stats.calls += 1
        jump = None
        if not self._finished:
            self._snapshot()
            self._since_attempt += 1
            due = self.config.period if self.config.mode == "nowcast" else self.config.farcast_after
            if self._since_attempt == due:
                jump = self._attempt()
        self.stats.seconds += time.perf_counter() - start
        return jump

    def _attempt(self) -> Jump:
        """Predict, check, write, probe; keep or roll back (module docstring)."""
        start, config = time.perf_counter(), self.config
        before = after = None  # probe losses, with the guard on
        self._since_attempt = 0
        self._finished = config.mode == "farcast"
        steps = [self._predicted_step(group) for group in self._groups]
        nonfinite = [g.layer_type for g, step in zip(self._groups, steps) if not torch.isfinite(step).all()]
        if _mean_over_ranks(float(bool(nonfinite)), self._device) > 0:
            where = f"layer type(s) {', '.join(nonfinite)}" if nonfinite else "another rank"
            warnings.warn(
                f"nowcast jump at call {self.stats.calls} rolled back: the {self.bundle.kind!r} bundle "
                f"predicted NaN/Inf for {where}; the weights are unchanged",
                NowcastWarning,
                stacklevel=3,
            )
            return self._record("rolled_back_nonfinite", start)
        if config.guard:
            backup = [p.detach().clone() for p in self._params]
            before = self._probe_loss()
        with torch.no_grad():
            for group, step in zip(self._groups, steps):
                for param, piece in zip(group.params, step.split(group.sizes)):
                    param.add_(piece.view(param.shape).to(param))
        if config.guard:
            after = self._probe_loss()
            if not (math.isfinite(after) and after <= before + config.tolerance * abs(before)):
                with torch.no_grad():
                    for param, saved in zip(self._params, backup):
                        param.copy_(saved)
                return self._record("rolled_back_guard", start, before, after)
        apply_optimizer_policy(self.optimizer, self._params, config.optimizer_policy, config.momentum_scale)
        self._next = self._count = 0  # restart the history from the jumped weights
        self._snapshot()
        return self._record("accepted", start, before, after)

    def _record(
        self, outcome: str, start: float, before: float | None = None, after: float | None = None
    ) -> Jump:
        """Count an attempted jump with its `outcome` (one of `OUTCOMES`, each a `NowcastStats`
        counter) and the probe losses before and after it."""
        jump = Jump(self.stats.calls, outcome, before, after, time.perf_counter() - start)
        self.stats.attempted += 1
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        self.stats.jumps.append(jump)
        return jump

    def _predicted_step(self, group: _Group) -> Tensor:
        """(N,) prediction - last snapshot for every scalar of `group`, at least float32, on the
        buffer's device; windows of `chunk_size` scalars, oldest snapshot first."""
        capacity = group.history.shape[0]
        assert self._count == capacity, "a jump is only due once the window is full"
        order = [(self._next + i) % capacity for i in range(capacity)]  # ring slots, oldest first
        dtype = torch.promote_types(group.history.dtype, torch.float32)
        total, chunk = group.history.shape[1], self.config.chunk_size
        step = torch.empty(total, dtype=dtype, device=group.history.device)
        for begin in range(0, total, chunk):
            rows = [group.history[slot, begin : begin + chunk] for slot in order]
            window = torch.stack(rows, dim=1).to(dtype)  # (c, input_length): one gathering copy
            prediction = group.predictor.predict(window, self.config.horizon, chunk_size=chunk)  # (c,)
            torch.sub(prediction, window[:, -1], out=step[begin : begin + chunk])
        return step

    def _snapshot(self) -> None:
        """Copy every predicted parameter into ring slot `_next`."""
        with torch.no_grad():
            for group in self._groups:
                row = group.history[self._next]  # (N,)
                for param, piece in zip(group.params, row.split(group.sizes)):
                    piece.copy_(param.detach().reshape(-1))
        self._next = (self._next + 1) % self.bundle.input_length
        self._count = min(self._count + 1, self.bundle.input_length)

    def _probe_loss(self) -> float:
        """The probe loss of the unwrapped module under no_grad, averaged over ranks: in eval mode,
        except that BatchNorm layers normalize with the probe batch's own statistics (module
        docstring); their running statistics are restored afterwards."""
        modes = [(module, module.training) for module in self.module.modules()]
        norms = [m for m in self.module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
        self.module.eval()
        for norm in norms:
            norm.train()
        try:
            with torch.no_grad():
                value = float(self.probe(self.module))
        finally:
            for module, training in modes:
                module.training = training
            with torch.no_grad():
                for norm, buffers in zip(norms, saved):
                    for buffer, backup in zip(norm.buffers(recurse=False), buffers):
                        buffer.copy_(backup)
        return _mean_over_ranks(value, self._device)

    def _check_probe(self, probe: ProbeLoss | tuple | None) -> ProbeLoss | None:
        if isinstance(probe, tuple):
            if len(probe) != 3 or not callable(probe[2]):
                raise ConfigError(
                    f"a probe batch is (inputs, targets, loss_fn); got a tuple of {len(probe)} items"
                )
            probe = probe_batch(*probe)
        if probe is not None and not callable(probe):
            raise TypeError(
                "probe must be a callable module -> loss or (inputs, targets, loss_fn); "
                f"got {type(probe).__name__}"
            )
        if probe is None and self.config.guard:
            raise ConfigError(
                "the guard (NowcastConfig.guard, on by default) needs a probe: pass "
                "probe=(inputs, targets, loss_fn) or a callable module -> loss, or set guard=False"
            )
        return probe

    def _select_parameters(self) -> tuple[dict[str, str], dict[str, str]]:
        """(name -> layer type of the parameters to predict, name -> why a parameter is left alone)."""
        report = assign_layer_types(self.module)
        unknown, wanted = set(report.fallbacks), self.config.layer_types
        predicted, untouched = {}, {}
        for name, param in self.module.named_parameters():
            layer_type = report.types[name]
            if not param.requires_grad:
                untouched[name] = "frozen (requires_grad=False)"
            elif name in unknown:
                untouched[name] = "unknown layer type (its module is not recognised by zoo.layer_types)"
            elif wanted is not None and layer_type not in wanted:
                untouched[name] = f"layer type {layer_type!r} not in NowcastConfig.layer_types"
            else:
                predicted[name] = layer_type
        names = [n for n, why in untouched.items() if why.startswith("unknown")]
        if names:
            warnings.warn(
                f"{len(names)} parameter(s) of {type(self.module).__name__} have no known layer type and are "
                f"left untouched by the nowcaster: {', '.join(names)}",
                NowcastWarning,
                stacklevel=3,
            )
        if not predicted:
            among = f" in {wanted}" if wanted else ""
            raise ConfigError(
                f"{type(self.module).__name__} has no parameter to predict (trainable, of a known layer "
                f"type{among}); left alone: {untouched or 'no parameters at all'}"
            )
        return predicted, untouched

    def _build_groups(self) -> list[_Group]:
        """One `_Group` per layer type present, with its predictor and preallocated ring buffer."""
        params = dict(self.module.named_parameters())
        dtype, device = BUFFER_DTYPES[self.config.buffer_dtype], torch.device(self.config.buffer_device)
        groups = []
        for layer_type in LAYER_TYPES:
            names = [n for n, t in self.predicted.items() if t == layer_type]
            if not names:
                continue
            try:
                predictor = self.bundle.predictor_for(layer_type)
            except MissingPredictorError as err:
                shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                others = [t for t in LAYER_TYPES if t != layer_type]
                raise MissingPredictorError(
                    f"{err}; the model has {len(names)} parameter(s) of layer type {layer_type!r} ({shown}): "
                    "use a bundle that serves it, or leave them untouched with NowcastConfig.layer_types "
                    f"(e.g. {others})"
                ) from None
            if not predictor.supports_horizon(self.config.horizon):
                raise ConfigError(
                    f"the bundle's {predictor.kind!r} predictor for layer type {layer_type!r} covers "
                    f"horizons {predictor.horizons}, not horizon={self.config.horizon}; "
                    "set NowcastConfig.horizon to one of them"
                )
            members = [params[n] for n in names]
            sizes = [p.numel() for p in members]
            history = torch.empty(self.bundle.input_length, sum(sizes), dtype=dtype, device=device)
            groups.append(_Group(layer_type, predictor, members, sizes, history))
        return groups


@dataclass
class _Group:
    """The predicted parameters of one layer type and their snapshots."""

    layer_type: str
    predictor: Predictor
    params: list[nn.Parameter]
    sizes: list[int]  # numel of each parameter: its slice of a history row
    history: Tensor  # (input_length, N): ring slot x every scalar of the group, parameters in order


def _mean_over_ranks(value: float, device: torch.device) -> float:
    """`value` averaged over all ranks when torch.distributed is initialized (identical on every
    rank afterwards), else `value`."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()
