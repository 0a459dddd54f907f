"""Forecast error on held-out histories (eval stage, the last of zoo <- collect <- train_predictor
<- eval): how far the predictions of each method's bundle, and of the rule-based baselines, land
from the weights that training actually reached, on a collection of runs of held-out tasks.

Definitions. A history is one parameter tensor's recorded values, flattened to (T, S): T
snapshots (epoch 0 = before training), S scalars. For a predictor of window L and a horizon h,
every position t with L - 1 <= t <= T - 1 - h gives, for all S scalars at once,

    window = values[t-L+1 .. t]   (S, L), oldest first
    start  = values[t]            the last input, which is also the no-jump prediction
    target = values[t + h]        what training reached h snapshots later
    pred   = the predictor of the history's layer type at horizon h

- MSE and MAE: over every scalar of every (tensor, position) of the layer type, raw weight units.
- Relative distance (WNN, eq. 1): ||pred - target||_2 / ||target - start||_2, and relative
  direction (eq. 2): cos(pred - start, target - start), each computed per parameter tensor and
  position (norms over the tensor's S scalars), then averaged over the (tensor, position) pairs of
  the layer type. Pairs whose target did not move (target == start) are left out: both are
  undefined there. A prediction that does not move (pred == start) has direction 0 by definition,
  so the no-jump reference row is exactly distance 1, direction 0. Lower distance and higher
  direction are better; WNN's beneficial region is distance < 1 with direction > 0.

No-jump is always evaluated, at every (window, horizon) a bundle uses, as the reference row;
`mae_vs_no_jump` is a row's MAE over no-jump's on the same windows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor

from weightcast.collect import Collection
from weightcast.eval.config import ForecastConfig
from weightcast.train_predictor.bundle import MissingPredictorError, PredictorBundle
from weightcast.train_predictor.predictors import Predictor, build_predictor
from weightcast.zoo.config import ConfigError

__all__ = ["ForecastRow", "ForecastResult", "relative_distance", "relative_direction", "evaluate_forecast"]

REFERENCE = "no-jump"


@dataclass
class ForecastRow:
    """The errors of one method on one layer type at one (window, horizon)."""

    method: str  # a method name of the eval config, or a baseline kind
    kind: str  # the predictor kind
    layer_type: str
    input_length: int
    horizon: int
    pairs: int  # (tensor, position) pairs evaluated
    scalars: int  # scalar predictions, over all pairs
    mse: float
    mae: float
    relative_distance: float  # mean over pairs with target != start; nan if none
    relative_direction: float
    mae_vs_no_jump: float = math.nan


@dataclass
class ForecastResult:
    collection: str
    path: str
    runs: int
    tasks: list[str]
    histories: dict[str, int]  # layer type -> parameter histories read
    rows: list[ForecastRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be evaluated, and why

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def relative_distance(pred: Tensor, target: Tensor, start: Tensor) -> float | None:
    """||pred - target|| / ||target - start|| over all elements; None when target == start."""
    moved = float(torch.linalg.vector_norm((target - start).double()))
    if moved == 0:
        return None
    return float(torch.linalg.vector_norm((pred - target).double())) / moved


def relative_direction(pred: Tensor, target: Tensor, start: Tensor) -> float | None:
    """cos(pred - start, target - start) over all elements; None when target == start, 0 when
    pred == start (a prediction that does not move points nowhere)."""
    step, truth = (pred - start).double().flatten(), (target - start).double().flatten()
    truth_norm, step_norm = float(torch.linalg.vector_norm(truth)), float(torch.linalg.vector_norm(step))
    if truth_norm == 0:
        return None
    if step_norm == 0:
        return 0.0
    return float(step @ truth) / (step_norm * truth_norm)


def evaluate_forecast(
    collection: Collection, bundles: dict[str, PredictorBundle], config: ForecastConfig
) -> ForecastResult:
    """Errors of every bundle (method name -> bundle) and of `config.baselines` on the
    collection's histories of runs of split `config.split`, per layer type, window and horizon."""
    runs = collection.runs(split=config.split)
    if not runs:
        raise ConfigError(
            f"collection {collection.name!r} ({collection.root}) has no runs of split {config.split!r}; "
            f"its tasks: {sorted({r['task'] for r in collection.runs()})}"
        )
    result = ForecastResult(
        collection.name, str(collection.root), len(runs), sorted({r["task"] for r in runs}), {}
    )
    for layer_type in collection.layer_types:
        evaluators = _evaluators(layer_type, bundles, config, result.notes)
        if not evaluators:
            continue
        sums: dict[tuple, _Sums] = {}
        histories = collection.histories(layer_type, split=config.split)
        count = 0
        for history in _limit(histories, config.max_histories):
            count += 1
            values = history.values.reshape(len(history.values), -1).float()  # (T, S)
            for name, predictor, horizon in evaluators:
                key = (name, predictor.kind, predictor.input_length, horizon)
                sums.setdefault(key, _Sums()).add(values, predictor, horizon)
        result.histories[layer_type] = count
        result.rows += _rows(layer_type, sums, result.notes)
    return result


def _evaluators(
    layer_type: str, bundles: dict[str, PredictorBundle], config: ForecastConfig, notes: list[str]
) -> list[tuple[str, Predictor, int]]:
    """(name, predictor, horizon) for every bundle and horizon, then the baselines (no-jump
    always) at every (window, horizon) the bundles use."""
    evaluators, geometries = [], []
    for name, bundle in bundles.items():
        try:
            predictor = bundle.predictor_for(layer_type)
        except MissingPredictorError as err:
            notes.append(f"{name}: no predictor for layer type {layer_type!r} ({err})")
            continue
        for horizon in config.horizons or predictor.horizons:
            if not predictor.supports_horizon(horizon):
                notes.append(
                    f"{name}: its {predictor.kind} predictor covers horizons {predictor.horizons}, "
                    f"not {horizon} (layer type {layer_type!r})"
                )
                continue
            evaluators.append((name, predictor, horizon))
            geometries.append((predictor.input_length, horizon))
    taken = {(name, p.kind, p.input_length, h) for name, p, h in evaluators}
    for input_length, horizon in dict.fromkeys(geometries):
        for kind in dict.fromkeys([REFERENCE, *config.baselines]):
            if (kind, kind, input_length, horizon) in taken:  # a method that is this very baseline
                continue
            try:
                baseline = build_predictor(kind, input_length=input_length, horizon=horizon)
            except ConfigError as err:  # e.g. linear-fit on a window of one value
                notes.append(f"baseline {kind} skipped for window {input_length}: {err}")
                continue
            evaluators.append((kind, baseline, horizon))
    return evaluators


class _Sums:
    """Running sums of one method's errors over the windows of one layer type."""

    def __init__(self) -> None:
        self.pairs = self.scalars = 0
        self.sse = self.sae = 0.0
        self.distance, self.distance_n, self.direction, self.direction_n = 0.0, 0, 0.0, 0

    def add(self, values: Tensor, predictor: Predictor, horizon: int) -> None:
        """Every position of one history (T, S), one window (S, L) at a time (bounded memory)."""
        length = predictor.input_length
        for t in range(length - 1, len(values) - horizon):
            window = values[t - length + 1 : t + 1].T  # (S, L)
            start, target = values[t], values[t + horizon]  # (S,)
            pred = predictor.predict(window, horizon)
            error = (pred - target).double()
            self.pairs += 1
            self.scalars += len(error)
            self.sse += float(error.square().sum())
            self.sae += float(error.abs().sum())
            distance = relative_distance(pred, target, start)
            direction = relative_direction(pred, target, start)
            if distance is not None:
                self.distance += distance
                self.distance_n += 1
            if direction is not None:
                self.direction += direction
                self.direction_n += 1


def _rows(layer_type: str, sums: dict[tuple, _Sums], notes: list[str]) -> list[ForecastRow]:
    rows = []
    for (name, kind, input_length, horizon), s in sums.items():
        if not s.pairs:
            notes.append(
                f"{name}: no history of layer type {layer_type!r} has {input_length + horizon} snapshots "
                f"(window {input_length} + horizon {horizon})"
            )
            continue
        rows.append(
            ForecastRow(
                name, kind, layer_type, input_length, horizon, s.pairs, s.scalars,
                s.sse / s.scalars, s.sae / s.scalars,
                s.distance / s.distance_n if s.distance_n else math.nan,
                s.direction / s.direction_n if s.direction_n else math.nan,
            )
        )
    reference = {(r.input_length, r.horizon): r.mae for r in rows if r.method == REFERENCE}
    for row in rows:
        base = reference.get((row.input_length, row.horizon))
        row.mae_vs_no_jump = row.mae / base if base else math.nan
    return rows


def _limit(items: Iterable[Any], count: int) -> Iterable[Any]:
    """The first `count` items (all when count is 0)."""
    for index, item in enumerate(items):
        if count and index >= count:
            return
        yield item
