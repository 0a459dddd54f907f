"""The live-training runtime of weightcast's last stage, `eval`: a `Nowcaster` applies a predictor
bundle (`train_predictor`) to any PyTorch training run, the zoo's loop (`eval.runtime.hook.NowcastHook`)
or a plain one. Two lines added to a plain loop, one to create it, one to call it:

    nowcaster = Nowcaster(model, optimizer, "org/wnn-bundle", probe=(x_probe, y_probe, loss_fn))
    for epoch in range(epochs):
        train_one_epoch(model, optimizer)
        nowcaster()  # after every epoch: a snapshot, and every `period` epochs a jump

Or in optimizer steps, NiNo's cadence (5 states `period / 5` steps apart, a jump every `period`
steps, a decreasing horizon): call it after every step and it decides what is due:

    config = NowcastConfig(period=1000, snapshot_every=200, horizon_schedule="nino", max_calls=total_steps)
    nowcaster = Nowcaster(model, optimizer, nino_bundle, config, probe=(x_probe, y_probe, loss_fn))
    for step in range(total_steps):
        train_step(model, optimizer)
        nowcaster()  # every 200 calls a snapshot, every 1000 a jump

What a call does. The nowcaster keeps a ring buffer of the last `input_length` snapshots of every
predicted parameter (CPU float32 by default), one preallocated (input_length, N) tensor per layer
type that holds all N scalars of that type's parameters side by side, so one jump is one
chunked `predict` per layer type (a `per_tensor` predictor such as NiNo's, which standardizes each
parameter tensor by its own statistics, gets one call per parameter tensor instead, with its
layer type; a graph predictor, `nino`, one `predict_graph` call on the model's neuron graph, built
once, for every parameter the graph places: `eval.runtime.graph_path`). The buffer holds the
weights at construction and after every `snapshot_every`-th
call (every call by default); windows are taken oldest first. Units: `period` and
`farcast_after` count calls, `horizon` counts snapshot intervals (calls when `snapshot_every`
is 1), so call it at the cadence its bundle was trained on (epochs for WNN and LFD-2, a state
every period / 5 steps for NiNo). A call that takes no snapshot only counts.

- mode "nowcast" (WNN): every `period` calls (default and minimum: the bundle's window times
  `snapshot_every`, 5 for WNN) the parameters jump to the prediction `horizon` snapshot intervals
  ahead (default: the bundle's; with `horizon_schedule="nino"`, jump j goes
  round(linspace(horizon ** 0.5, 1, max_calls // period) ** 2)[j] ahead, then 1).
- mode "farcast" (LFD-2): once, after `farcast_after` = n calls (default (input_length - 1) x
  `snapshot_every`, so that the window is the weights at construction and at each snapshot since,
  `w_0..w_n` of the paper), the parameters jump to the predicted snapshot n + m (m = `horizon`,
  default the bundle's farthest); training then goes on without further jumps.

A jump writes `w + (prediction - last snapshot)` into each parameter: the same as the
prediction, since the last snapshot is the current weights, but a reduced-precision buffer
(float16, bfloat16) only rounds the step, never the weights. After an accepted jump the buffer is
emptied and restarts from the jumped weights: the history before the jump is not the trajectory
of the new weights, so the next window holds only snapshots taken after it (WNN's protocol: train
`period` epochs, jump, repeat). A rolled-back jump keeps the buffer (the weights are back on
their trajectory); either way the next attempt comes `period` calls later.

Guard (on by default, `guard=False` turns it off; the rules are in `eval.runtime.guard`): the
loss on a fixed probe batch is computed under no_grad before the jump and at scales of the
predicted step, in eval mode except for BatchNorm layers, which normalize with the probe batch's
statistics (`eval.runtime.probe` says why; their buffers are restored after the probe, and every
module's train/eval mode too). The default rule, "line-search", keeps the largest of the scales
1, 0.5, 0.25 whose loss rises by at most the allowed rise: 1% of the loss, or half of the loss's
fall over the period before the jump (the first period's from the window's oldest snapshot),
whichever is larger (a jump that lands ahead of the
trajectory but slightly off it raises the loss for a few steps, then pays off). If no scale
does, the weights are restored exactly and the rollback is counted. "veto" (the rule before)
probes scale 1 only, "accept" none. With `lookahead`, a kept jump is judged again at the next
snapshot and undone (weights and optimizer state) if the probe loss has not come back to its value
before the jump (`rolled_back_lookahead`; the interval's training is lost). `python -m
weightcast.eval.guard_benchmark` measures the rules. The probe is
evaluated once at construction: a probe that returns anything but one number fails there, and
a NaN/Inf probe loss warns once (every jump is then rolled back). Predictions with NaN or Inf are
never written: the jump is rolled back with a `NowcastWarning` and counted: bad predicted
values never crash the run.

Exceptions: if anything raises inside an attempted jump (an OOM in the predictor or the probe,
KeyboardInterrupt), the weights are restored from the attempt's backup, the attempt is counted
(`rolled_back_error`) and the exception propagates.

Checkpoints: `state_dict()` / `load_state_dict()` save and restore the ring buffer, the counters,
the position in the horizon schedule and the stats (not the probe, the model or the bundle); a
run resumed from a checkpoint of model, optimizer and nowcaster makes exactly the jumps of an
uninterrupted one (with `min_payoff` = 0, the default: its skips depend on timing).

Overhead: with `min_payoff` > 0, a due jump is skipped (counted in `stats.skipped`) when the
training time it stands to save, `horizon` snapshot intervals as timed between calls, is below
`min_payoff` x the cheapest attempted jump's measured seconds: on a model whose epoch takes
milliseconds the prediction costs more than it can save.

What is left alone: buffers (BatchNorm running statistics; the probe restores them), frozen
parameters (requires_grad=False), parameters of unknown layer type (typed by rank alone in
`zoo.layer_types`; reported in `untouched` with a `NowcastWarning`), the learning-rate schedule.
DistributedDataParallel (and DataParallel) models are unwrapped; every rank computes the same
prediction from the same weights, and the rank-dependent decisions (NaN check, probe loss) are
averaged over ranks with all_reduce, so all ranks keep or roll back together.

Optimizer state after an accepted jump, `optimizer_policy` (only jumped parameters' state):
"keep" (the papers), "reset" (a fresh optimizer's state) or "rescale" (the momentum damped by
`momentum_scale`); `eval.runtime.optimizer_policy` defines them.

Cost: no autograd, windows gathered and predicted `chunk_size` scalars at a time; memory beyond
the model: the buffer (input_length copies, on `buffer_device`), the predicted steps (one float32
copy) and, during a jump, a backup of the jumped parameters on their device (with `lookahead`,
kept with a copy of their optimizer state until the verdict). `stats`
(`NowcastStats`, `eval.runtime.stats`) counts calls, jumps attempted / accepted / rolled back
(guard, non-finite, error) / skipped, probes and the seconds spent (the probe's among them); each
`Jump` records its horizon and kept scale.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from weightcast.eval.runtime.config import BUFFER_DTYPES, NowcastConfig, horizon_schedule
from weightcast.eval.runtime.graph_path import GraphPath
from weightcast.eval.runtime.guard import allowed_rise, confirmed, line_search, trajectory_noise
from weightcast.eval.runtime.optimizer_policy import apply_optimizer_policy
from weightcast.eval.runtime.probe import LossFn, ProbeLoss, evaluate_probe, probe_batch
from weightcast.eval.runtime.stats import Jump, NowcastStats
from weightcast.train_predictor.bundle import (
    SHIPPED_PREFIX,
    MissingPredictorError,
    PredictorBundle,
    load_bundle,
)
from weightcast.train_predictor.predictors import Predictor
from weightcast.zoo.config import ConfigError
from weightcast.zoo.layer_types import LAYER_TYPES, assign_layer_types

from weightcast.errors import WeightcastWarning

__all__ = ["DEFAULT_BUNDLE", "STATE_VERSION", "NowcastWarning", "Nowcaster", "open_bundle", "unwrap"]

STATE_VERSION = 1  # of `Nowcaster.state_dict()`
DEFAULT_BUNDLE = SHIPPED_PREFIX + "lfd2"  # what a Nowcaster applies given no bundle (README, Results)


class NowcastWarning(WeightcastWarning):
    """A jump was rolled back for non-finite predictions, or parameters are left untouched."""


def open_bundle(
    source: PredictorBundle | str | os.PathLike = DEFAULT_BUNDLE, revision: str | None = None
) -> PredictorBundle:
    """A bundle as given, or `load_bundle(source, revision)`: `shipped:<kind>` (a pretrained bundle
    installed with weightcast), a local folder or a Hub repository id ("org/name") at `revision`
    (branch, tag or commit; the bundle's `revision` is the commit it resolved to)."""
    if isinstance(source, PredictorBundle):
        if revision is not None:
            raise ConfigError(f"revision={revision!r} selects a Hub commit; this bundle is loaded already")
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_bundle(source, revision)
    raise TypeError(
        "bundle must be a PredictorBundle, shipped:<kind>, a bundle folder or a Hub repository id; "
        f"got {type(source).__name__}"
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel; any other model as is."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


class Nowcaster:
    """Makes `model`'s parameters jump to `bundle`'s predictions; call it once per epoch (or
    every N steps). See the module docstring for what a call does.

    Args:
        model: any module; DDP / DataParallel wrappers are unwrapped.
        optimizer: its optimizer, whose state `config.optimizer_policy` adjusts (None: keep only).
        bundle: a `PredictorBundle`, `shipped:<kind>` (a pretrained bundle installed with
            weightcast: wnn, lfd2, introspection), a bundle folder or a Hub repository id;
            default the shipped LFD-2 bundle (DEFAULT_BUNDLE).
        config: how to apply it; default `NowcastConfig()`.
        probe: the guard's loss, a callable `module -> float` (given the unwrapped module, run in
            eval mode under no_grad) or a batch `(inputs, targets, loss_fn)`; required while
            `config.guard` is on.
        revision: of a Hub `bundle`: branch, tag or commit (default main); `bundle.revision` holds
            the commit it resolved to.

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
        revision: str | None = None,
    ):
        start = time.perf_counter()
        self.model, self.module, self.optimizer = model, unwrap(model), optimizer
        self.bundle = open_bundle(bundle, revision)
        self.config = (config or NowcastConfig()).for_bundle(self.bundle)
        if optimizer is None and self.config.optimizer_policy != "keep":
            raise ConfigError(
                f"optimizer_policy={self.config.optimizer_policy!r} needs the optimizer; got None"
            )
        self._horizons = horizon_schedule(self.config)  # jump j goes _horizons[min(j, len - 1)] ahead
        self.predicted, self.untouched = self._select_parameters()
        self._groups = self._build_groups()
        # a graph predictor (nino): the neuron graph, built once; one predict_graph call per jump
        self._graph = GraphPath.build(self.module, self.bundle, self.predicted)
        self._params = [p for group in self._groups for p in group.params]
        self._device = self._params[0].device  # where the all_reduce of rank decisions runs
        self._next = 0  # ring slot the next snapshot goes to
        self._count = 0  # snapshots held, at most input_length
        self._since_snapshot = 0  # calls since the last snapshot
        self._since_attempt = 0  # calls since construction or the last due jump
        self._due = 0  # due jumps so far, attempted or skipped: the position in the horizon schedule
        self._finished = False  # farcast mode: the one jump was due
        self._losses: list[float] = []  # probe loss at each held snapshot (noise_tolerance > 0 only)
        self._call_seconds: float | None = None  # moving mean of the time between two calls
        self._jump_seconds: float | None = None  # the cheapest attempted jump's seconds
        self._left_at: float | None = None  # perf_counter when the last call returned
        self._warned_nan = False
        self._probes = 0  # probe evaluations so far
        self._reference = math.nan  # probe loss at the period's start (construction, last attempt)
        self._pending: _Pending | None = None  # a kept jump awaiting the look-ahead's verdict
        self.stats = NowcastStats()
        self.probe = self._check_probe(probe)  # evaluates it once: a bad probe fails here
        self._snapshot(self._reference)  # the weights at construction: w_0 of a farcast window
        self.stats.seconds += time.perf_counter() - start

    def __call__(self) -> Jump | None:
        """Count a call; take a snapshot when one is due (every `snapshot_every` calls) and
        attempt a jump when one is due; returns the attempted jump, or None."""
        start = time.perf_counter()
        if self._left_at is not None:  # the training time since the last call, for min_payoff
            gap = start - self._left_at
            self._call_seconds = gap if self._call_seconds is None else 0.8 * self._call_seconds + 0.2 * gap
        self.stats.calls += 1
        jump = None
        try:
            if self._pending is not None:  # due with the first snapshot after the jump
                self._pending.calls += 1
                if self._pending.calls >= self.config.snapshot_every:
                    self._judge_pending()
            if not self._finished:
                self._since_snapshot += 1
                self._since_attempt += 1
                # >= and a full window: a snapshot interrupted by an exception (KeyboardInterrupt)
                # is taken at the next call, and the jump waits for it, instead of being lost
                if self._since_snapshot >= self.config.snapshot_every:
                    self._snapshot()
                    self._since_snapshot = 0
                due = self.config.period if self.config.mode == "nowcast" else self.config.farcast_after
                if self._since_attempt >= due and self._count == self.bundle.input_length:
                    jump = self._due_jump()
        finally:
            self._left_at = time.perf_counter()
            self.stats.seconds += self._left_at - start
        return jump

    def state_dict(self) -> dict[str, Any]:
        """The nowcaster's state for a checkpoint (beside the model's and the optimizer's): the
        ring buffer, counters, schedule position and stats; not the probe, the model or the bundle.
        Plain tensors and Python values: `torch.save` / `torch.load(weights_only=True)` keep it."""
        return {
            "version": STATE_VERSION,
            "bundle_kind": self.bundle.kind,
            "cadence": self._cadence(),
            "parameters": {g.layer_type: list(g.names) for g in self._groups},
            "history": {g.layer_type: g.history.clone() for g in self._groups},
            "next": self._next,
            "count": self._count,
            "since_snapshot": self._since_snapshot,
            "since_attempt": self._since_attempt,
            "due": self._due,
            "finished": self._finished,
            "losses": list(self._losses),
            "call_seconds": self._call_seconds,
            "jump_seconds": self._jump_seconds,
            "warned_nan": self._warned_nan,
            "probes": self._probes,
            "reference": self._reference,
            "pending": None if self._pending is None else dataclasses.asdict(self._pending),
            "stats": dataclasses.asdict(self.stats),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()` of a nowcaster on the same model (same predicted parameters),
        bundle window and cadence; the run then makes the jumps the uninterrupted one would."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"nowcaster state version {state.get('version')!r} is not {STATE_VERSION}, the one this "
                "weightcast reads; resume with the weightcast that wrote the checkpoint"
            )
        mine = {g.layer_type: list(g.names) for g in self._groups}
        here = {"parameters": mine, "cadence": self._cadence()}
        changed = [key for key, value in here.items() if state[key] != value]
        if changed:
            raise ConfigError(
                f"the checkpointed nowcaster differs from this one in its {' and '.join(changed)}: saved "
                f"{[state[k] for k in changed]}, here {[here[k] for k in changed]}; resume with the "
                "model, bundle and NowcastConfig cadence of the checkpointed run"
            )
        with torch.no_grad():
            for group in self._groups:
                group.history.copy_(state["history"][group.layer_type])
        self._next, self._count = state["next"], state["count"]
        self._since_snapshot, self._since_attempt = state["since_snapshot"], state["since_attempt"]
        self._due, self._finished = state["due"], state["finished"]
        self._losses = list(state["losses"])
        self._call_seconds, self._jump_seconds = state["call_seconds"], state["jump_seconds"]
        self._warned_nan, self._probes, self._reference = (
            state["warned_nan"],
            state["probes"],
            state["reference"],
        )
        self._left_at = None  # the time to the first call after resuming is not a training call's
        stats = dict(state["stats"])
        stats["jumps"] = [Jump(**jump) for jump in stats["jumps"]]
        self.stats = NowcastStats(**stats)
        pending = state["pending"]
        self._pending = None if pending is None else _Pending(**pending)

    def _cadence(self) -> dict[str, Any]:
        """What fixes when snapshots and jumps fall and how far they go: a checkpoint must match it."""
        keys = (
            "mode",
            "period",
            "farcast_after",
            "snapshot_every",
            "horizon",
            "horizon_schedule",
            "max_calls",
            "lookahead",
        )
        return {key: getattr(self.config, key) for key in keys} | {"input_length": self.bundle.input_length}

    def _due_jump(self) -> Jump | None:
        """A jump is due: attempt it, or skip it when its cost cannot pay (NowcastConfig.min_payoff)."""
        horizon = self._horizons[min(self._due, len(self._horizons) - 1)]
        self._due += 1
        self._since_attempt = 0
        self._finished = self.config.mode == "farcast"
        if self._unprofitable(horizon):
            self.stats.skipped += 1
            return None
        return self._attempt(horizon)

    def _unprofitable(self, horizon: int) -> bool:
        """Whether the training time a jump stands to save, `horizon` snapshot intervals, is below
        `min_payoff` x the measured cost of a jump (decided alike on every rank)."""
        config = self.config
        if not config.min_payoff or self._jump_seconds is None or self._call_seconds is None:
            return False  # the same on every rank: the first attempt always runs
        gain = horizon * config.snapshot_every * self._call_seconds
        return _mean_over_ranks(float(gain < config.min_payoff * self._jump_seconds), self._device) >= 0.5

    def _attempt(self, horizon: int) -> Jump:
        """Predict, check, write, probe; keep or roll back (module docstring). On an exception
        (OOM, KeyboardInterrupt) the weights are restored, the attempt counted, and it propagates."""
        start, config, probes = time.perf_counter(), self.config, self._probes
        before = after = None  # probe losses, with the guard on
        backup: list[Tensor] | None = None
        pending: _Pending | None = None
        try:
            graph_steps = self._graph.steps(self._groups, self._next, horizon) if self._graph else {}
            steps = [self._predicted_step(group, horizon, graph_steps) for group in self._groups]
            nonfinite = [
                g.layer_type for g, step in zip(self._groups, steps) if not torch.isfinite(step).all()
            ]
            if _mean_over_ranks(float(bool(nonfinite)), self._device) > 0:
                where = f"layer type(s) {', '.join(nonfinite)}" if nonfinite else "another rank"
                warnings.warn(
                    f"nowcast jump at call {self.stats.calls} rolled back: the {self.bundle.kind!r} bundle "
                    f"predicted NaN/Inf for {where}; the weights are unchanged",
                    NowcastWarning,
                    stacklevel=4,
                )
                return self._record("rolled_back_nonfinite", start, horizon, probes, scale=0.0)
            backup = [p.detach().clone() for p in self._params]
            scale = 1.0
            if config.guard:
                before = self._losses[-1] if self._losses else self._probe_loss()
                if not math.isfinite(before):
                    self._warn_nan(f"before the jump at call {self.stats.calls}")
                    return self._record("rolled_back_guard", start, horizon, probes, before, scale=0.0)
                if config.guard_rule == "accept":  # no probe now: the look-ahead judges it, if on
                    self._write(steps, 1.0, backup)
                else:
                    scale, after = self._search_scale(steps, backup, before)
                    if scale == 0.0:
                        self._restore(backup)
                        return self._record("rolled_back_guard", start, horizon, probes, before, after, 0.0)
                if config.lookahead:  # what to restore if the look-ahead fails, before the policy runs
                    pending = _Pending(backup, self._optimizer_state(), before, len(self.stats.jumps))
            else:
                self._write(steps, 1.0, backup)
            apply_optimizer_policy(
                self.optimizer, self._params, config.optimizer_policy, config.momentum_scale
            )
        except BaseException:
            if backup is not None:
                self._restore(backup)
            self._record("rolled_back_error", start, horizon, probes, before, after, 0.0)
            raise
        self._next = self._count = 0  # restart the history from the jumped weights
        self._losses = []
        self._pending = pending
        self._snapshot(after)
        jump = self._record("accepted", start, horizon, probes, before, after, scale)
        self._jump_seconds = (
            jump.seconds if self._jump_seconds is None else min(self._jump_seconds, jump.seconds)
        )
        return jump

    def _search_scale(self, steps: list[Tensor], backup: list[Tensor], before: float) -> tuple[float, float]:
        """The guard's rule ("line-search" or "veto", eval.runtime.guard) on the predicted `steps`
        from the weights `backup`, whose probe loss is `before`: (kept scale, its probe loss), the
        weights left at that scale; (0.0, the lowest loss probed) when none is kept."""
        config = self.config
        if self.stats.attempted == 0 and config.progress_tolerance:
            # the first period's fall counts from the window's oldest snapshot: from construction
            # it would include the first steps' steep fall, an outsized credit
            full = len(self._losses) == self.bundle.input_length  # probed at each snapshot
            self._reference = self._losses[0] if full else self._window_start_loss(backup)
        rise = allowed_rise(
            before,
            config.tolerance,
            progress=self._reference - before,  # the fall over the period (NaN: no credit)
            progress_tolerance=config.progress_tolerance,
            noise=trajectory_noise(self._losses) if config.noise_tolerance else 0.0,
            noise_tolerance=config.noise_tolerance,
        )
        line = config.guard_rule == "line-search"

        def loss_at(scale: float) -> float:
            self._write(steps, scale, backup)
            return self._probe_loss()

        scales = config.scales if line else [1.0]
        result = line_search(loss_at, before, scales, rise, expand=line and config.expand)
        self._reference = result.loss if result.scale else before  # the next period's starting loss
        if result.scale and result.scale != result.tried[-1][0]:  # the weights hold the last scale probed
            self._write(steps, result.scale, backup)
        return result.scale, result.loss

    def _record(
        self,
        outcome: str,
        start: float,
        horizon: int,
        probes: int,
        before: float | None = None,
        after: float | None = None,
        scale: float = 1.0,
    ) -> Jump:
        """Count an attempted jump with its `outcome` (one of `OUTCOMES`, each a `NowcastStats`
        counter), the probe losses before and after it, and the probes it took since `probes`."""
        seconds = time.perf_counter() - start
        jump = Jump(self.stats.calls, outcome, before, after, seconds, horizon, scale, self._probes - probes)
        self.stats.attempted += 1
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        self.stats.jumps.append(jump)
        if outcome != "accepted":
            self._jump_seconds = seconds if self._jump_seconds is None else min(self._jump_seconds, seconds)
        return jump

    def _write(self, steps: list[Tensor], scale: float, backup: list[Tensor]) -> None:
        """Write backup + scale x predicted step into every predicted parameter (at scale 1 the
        same as adding the step to the current weights)."""
        with torch.no_grad():
            params = iter(zip(self._params, backup))
            for group, step in zip(self._groups, steps):
                for piece, (param, saved) in zip(step.split(group.sizes), params):  # pieces first: zip
                    # stops on them without taking the next group's parameter
                    param.copy_(saved).add_(piece.view(param.shape).to(param), alpha=scale)

    def _judge_pending(self) -> None:
        """The look-ahead's verdict on the pending jump (eval.runtime.guard): keep it, or restore the
        weights and the optimizer state from before it and restart the history from them."""
        pending, self._pending = self._pending, None
        later = self._probe_loss()
        jump = self.stats.jumps[pending.jump]
        jump.probe_lookahead = later
        if confirmed(pending.before, later, self.config.tolerance):
            return
        self._restore(pending.weights)
        if self.optimizer is not None:
            for param, saved in zip(self._params, pending.optimizer):
                if saved is None:
                    self.optimizer.state.pop(param, None)
                else:
                    self.optimizer.state[param] = saved
        jump.outcome, jump.scale = "rolled_back_lookahead", 0.0
        self.stats.accepted -= 1
        self.stats.rolled_back_lookahead += 1
        self._next = self._count = 0  # the snapshots since the jump are of the undone trajectory
        self._losses = []
        self._reference = pending.before

    def _window_start_loss(self, backup: list[Tensor]) -> float:
        """The probe loss of the window's oldest snapshot, written into the model for the probe;
        the weights are then restored from `backup`."""
        oldest = self._next  # the window is full: the next slot to overwrite holds the oldest
        try:
            with torch.no_grad():
                for group in self._groups:
                    for param, piece in zip(group.params, group.history[oldest].split(group.sizes)):
                        param.copy_(piece.view(param.shape))
            return self._probe_loss()
        finally:
            self._restore(backup)

    def _optimizer_state(self) -> list[dict[str, Any] | None]:
        """A copy of the optimizer's per-parameter state (momenta, step counts) of every predicted
        parameter, None where it has none; not its param_groups, whose learning rates the schedule
        owns."""
        if self.optimizer is None:
            return [None] * len(self._params)
        state = self.optimizer.state
        return [
            {k: v.clone() if torch.is_tensor(v) else v for k, v in state[p].items()} if p in state else None
            for p in self._params
        ]

    def _restore(self, backup: list[Tensor]) -> None:
        with torch.no_grad():
            for param, saved in zip(self._params, backup):
                param.copy_(saved)

    def _predicted_step(self, group: _Group, horizon: int, graph_steps: dict[str, Tensor]) -> Tensor:
        """(N,) prediction `horizon` ahead - last snapshot for every scalar of `group`, at least
        float32, on the buffer's device; oldest snapshot first. Element-wise predictors get windows
        of `chunk_size` scalars; a `per_tensor` predictor (NiNo) one parameter tensor at a time."""
        capacity = group.history.shape[0]
        assert self._count == capacity, "a jump is only due once the window is full"
        order = [(self._next + i) % capacity for i in range(capacity)]  # ring slots, oldest first
        dtype = torch.promote_types(group.history.dtype, torch.float32)
        total, chunk = group.history.shape[1], self.config.chunk_size
        step = torch.empty(total, dtype=dtype, device=group.history.device)
        if getattr(group.predictor, "per_tensor", False):
            spans = itertools.accumulate(group.sizes, initial=0)
            for name, (begin, end) in zip(group.names, itertools.pairwise(spans)):
                if name in graph_steps:  # predicted on the neuron graph (eval.runtime.graph_path)
                    step[begin:end] = graph_steps[name]
                    continue
                window = group.history[order, begin:end].T.to(dtype)  # (numel, input_length)
                prediction = group.predictor.predict(
                    window, horizon, layer_type=group.layer_type, chunk_size=chunk
                )
                torch.sub(prediction, window[:, -1], out=step[begin:end])
            return step
        for begin in range(0, total, chunk):
            rows = [group.history[slot, begin : begin + chunk] for slot in order]
            window = torch.stack(rows, dim=1).to(dtype)  # (c, input_length): one gathering copy
            prediction = group.predictor.predict(window, horizon, chunk_size=chunk)  # (c,)
            torch.sub(prediction, window[:, -1], out=step[begin : begin + chunk])
        return step

    def _snapshot(self, loss: float | None = None) -> None:
        """Copy every predicted parameter into ring slot `_next` (and, with noise_tolerance, record
        the probe loss of these weights: `loss` when it is known, else probed)."""
        with torch.no_grad():
            for group in self._groups:
                row = group.history[self._next]  # (N,)
                for param, piece in zip(group.params, row.split(group.sizes)):
                    piece.copy_(param.detach().reshape(-1))
        self._next = (self._next + 1) % self.bundle.input_length
        self._count = min(self._count + 1, self.bundle.input_length)
        if self.config.guard and self.config.noise_tolerance and self.probe is not None:
            loss = self._probe_loss() if loss is None or math.isnan(loss) else loss
            self._losses = (self._losses + [loss])[-self.bundle.input_length :]

    def _probe_loss(self) -> float:
        """The probe loss of the unwrapped module (`evaluate_probe`: under no_grad, in eval mode but
        for BatchNorm layers), averaged over ranks."""
        start = time.perf_counter()
        try:
            value = evaluate_probe(self.probe, self.module)
        finally:
            self._probes += 1
            self.stats.probe_seconds += time.perf_counter() - start
        return _mean_over_ranks(value, self._device)

    def _warn_nan(self, when: str) -> None:
        """Warn, once per nowcaster, that the probe loss is NaN/Inf: the guard then keeps no jump."""
        if not self._warned_nan:
            self._warned_nan = True
            warnings.warn(
                f"the probe loss is NaN/Inf {when}: the guard cannot judge a jump and rolls every one "
                "back; check the probe (its batch, loss function and the model's outputs)",
                NowcastWarning,
                stacklevel=5,
            )

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
        self.probe = probe
        if probe is not None and self.config.guard:  # one evaluation: a non-scalar loss fails now
            self._reference = self._probe_loss()
            if not math.isfinite(self._reference):
                self._warn_nan("at construction")
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
            unsupported = sorted(k for k in set(self._horizons) if not predictor.supports_horizon(k))
            if unsupported:
                scheduled = (
                    "" if len(self._horizons) == 1 else f" (the {self.config.horizon_schedule} schedule's)"
                )
                raise ConfigError(
                    f"the bundle's {predictor.kind!r} predictor for layer type {layer_type!r} covers "
                    f"horizons {predictor.horizons}, not horizon={', '.join(map(str, unsupported))}"
                    f"{scheduled}; "
                    "set NowcastConfig.horizon to one of them"
                )
            members = [params[n] for n in names]
            sizes = [p.numel() for p in members]
            history = torch.empty(self.bundle.input_length, sum(sizes), dtype=dtype, device=device)
            groups.append(_Group(layer_type, predictor, names, members, sizes, history))
        return groups


@dataclass
class _Pending:
    """A kept jump awaiting the look-ahead's verdict: what to restore if it fails."""

    weights: list[Tensor]  # the predicted parameters before the jump
    optimizer: list[dict[str, Any] | None]  # their optimizer state before it (`_optimizer_state`)
    before: float  # the probe loss before the jump
    jump: int  # its index in stats.jumps
    calls: int = 0  # calls since the jump


@dataclass
class _Group:
    """The predicted parameters of one layer type and their snapshots."""

    layer_type: str
    predictor: Predictor
    names: list[str]
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
