"""Whole-model training samples for the `nino` graph network (train_predictor stage), as NiNo trains
it: every parameter of a run at once, on the run's neuron graph, instead of one scalar's window.

    training runs (data.select_runs / split_runs), a seeded order each pass: whole groups of runs
    (a group's runs share its shards), a few runs at a time (`runs_per_read`)
      -> read those runs' histories: every layer type's shard of their group,
         `Collection.read_samples(shards, run_ids)` (size, count and sha256 checked), grouped by run
      -> rebuild each run's architecture from its run record (zoo's `create_model` with the task's
         spec; weights are not needed) and build its neuron graph, once per architecture (cached)
      -> `samples_per_run` samples per run at random last-input times t, interleaved over the runs
         in memory: the states t-c+1..t and targets t+1..t+K of EVERY parameter, each tensor
         standardized by its window's statistics (`nino.tensor_stats`, (w - mean) / (std + eps))
      -> batches of `batch_size` samples (a list; `graph_batch_loss` averages their losses)

A run's sample (`GraphSample`), for c = input_length and K = horizon:

    states[name]  (c, *shape)   z = (w[t-c+1..t] - mean) / (std + eps)    float32
    targets[name] (K, *shape)   (w[t+1..t+K] - mean) / (std + eps)        the same mean and std
    scales[name]  (mean, std)   of the window w[t-c+1..t] (the prediction un-standardizes with std)

Memory: the histories of `runs_per_read` runs and their samples; a sample holds (c + K) copies of
the model's parameters. Times whose window or targets hold a non-finite value are never drawn.
Under torchrun each rank reads its own runs (runs[rank::world]); every rank gets `num_batches`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch import Tensor, nn
from weightcast.collect import decode_sample
from weightcast.train_predictor.data import CollectionSource
from weightcast.train_predictor.predictors import Predictor
from weightcast.train_predictor.predictors.neuron_graph import NeuronGraph, build_neuron_graph
from weightcast.train_predictor.predictors.nino import tensor_stats
from weightcast.zoo.models import create_model
from weightcast.zoo.tasks import get_task

from weightcast.errors import WeightcastError

__all__ = [
    "GraphDataError",
    "GraphSample",
    "evaluate_graphs",
    "graph_batch_loss",
    "graph_batches",
    "graph_sample",
    "graph_samples",
    "graph_validation_loss",
    "graph_validation_samples",
    "run_graph",
    "run_model",
]


# (arch, arch_kwargs, task, data_dir, max_feat) as JSON -> its neuron graph: one per architecture a
# collection holds (a graph is O(parameters); a zoo has tens of architectures)
_GRAPHS: dict[str, NeuronGraph] = {}


class GraphDataError(WeightcastError, ValueError):
    """A run's histories do not match the model its record describes (missing parameters, other shapes)."""


@dataclass
class GraphSample:
    """One run's parameters around one time t, standardized per tensor (see the module docstring)."""

    run_id: str
    graph: NeuronGraph
    time: int  # index of the last input state in the run's history
    states: dict[str, Tensor]  # name -> (c, *shape), standardized
    targets: dict[str, Tensor]  # name -> (K, *shape), standardized with the states' mean and std
    scales: dict[str, tuple[Tensor, Tensor]]  # name -> (mean, std) of the window, 0-dim
    layer_types: dict[str, str]  # name -> weightcast layer type (as the collection recorded it)
    eps: float = 1e-6  # of the standardization

    def raw(self, name: str, z: Tensor) -> Tensor:
        """Standardized values of parameter `name` in weight units again: z * (std + eps) + mean."""
        mean, std = self.scales[name]
        return z * (std + self.eps) + mean

    def raw_states(self) -> dict[str, Tensor]:
        """The states in weight units (float32 rounding apart)."""
        return {n: self.raw(n, z) for n, z in self.states.items()}


def run_model(record: Mapping[str, Any]) -> nn.Module:
    """The architecture of a run record (arch, arch_kwargs, task; its data_dir from the record's
    config), built for the task's spec, with default weights; raises `GraphDataError` if its
    parameters are not those the record lists."""
    config = record.get("config", {})
    spec = get_task(record["task"], config.get("data_dir")).spec  # built once per process (cached)
    with torch.random.fork_rng(devices=[]):  # its initialization leaves the caller's random stream alone
        model = create_model(record["arch"], spec, **record.get("arch_kwargs", {}))
    built = {n: list(p.shape) for n, p in model.named_parameters()}
    recorded = {p["name"]: list(p["shape"]) for p in record["params"]}
    if built != recorded:
        differ = sorted(n for n in built.keys() | recorded.keys() if built.get(n) != recorded.get(n))
        raise GraphDataError(
            f"run {record['run_id']}: architecture {record['arch']!r} {record.get('arch_kwargs')} on task "
            f"{record['task']!r} builds parameters that differ from the recorded ones ({differ[:5]}); the "
            f"zoo's architecture changed since the collection was made: collect again with this version"
        )
    return model


def run_graph(record: Mapping[str, Any], max_feat: int = 9) -> NeuronGraph:
    """The neuron graph of a run record's architecture (`run_model`), built once per (arch,
    arch_kwargs, task, max_feat) in this process and shared by its runs."""
    key = json.dumps(
        [record["arch"], record.get("arch_kwargs", {}), record["task"],
         record.get("config", {}).get("data_dir"), max_feat], sort_keys=True,
    )  # fmt: skip
    if key not in _GRAPHS:
        _GRAPHS[key] = build_neuron_graph(run_model(record), max_feat=max_feat)
    return _GRAPHS[key]


def graph_sample(
    run_id: str,
    graph: NeuronGraph,
    histories: Mapping[str, Tensor],
    layer_types: Mapping[str, str],
    time: int,
    input_length: int,
    horizon: int,
    eps: float = 1e-6,
) -> GraphSample:
    """The sample of one run at last-input time `time` from its histories {name: (T, *shape)}."""
    c = input_length
    states, targets, scales = {}, {}, {}
    for name, values in histories.items():
        window = values[time - c + 1 : time + 1]  # (c, *shape)
        mean, std = tensor_stats(window.reshape(c, -1).T, eps)  # float32 at least
        scale = std + eps
        states[name] = ((window.to(mean.dtype) - mean) / scale).float()
        targets[name] = ((values[time + 1 : time + 1 + horizon].to(mean.dtype) - mean) / scale).float()
        scales[name] = (mean.float(), std.float())
    return GraphSample(run_id, graph, time, states, targets, scales, dict(layer_types), eps)


def graph_samples(
    source: CollectionSource,
    run_ids: Iterable[str],
    predictor: Predictor,
    *,
    samples_per_run: int,
    runs_per_read: int = 8,
    seed: int | Sequence[int] = 0,
    passes: int | None = 1,
    rank: int = 0,
    world: int = 1,
) -> Iterator[GraphSample]:
    """Samples of the runs `run_ids` for `predictor` (its input_length, horizon, eps, max_feat):
    `samples_per_run` per run and pass, for `passes` passes (None: forever), in a seeded order
    (see the module docstring). Runs shorter than input_length + horizon snapshots give none."""
    c, k = predictor.input_length, predictor.horizon
    eps, max_feat = getattr(predictor, "eps", 1e-6), getattr(predictor, "max_feat", 9)
    records = {r["run_id"]: r for r in source.runs}
    wanted = sorted(r for r in set(run_ids) if records[r]["snapshots"] >= c + k)[rank::world]
    entropy = [seed] if isinstance(seed, int) else list(seed)
    count = 0
    while wanted and (passes is None or count < passes):
        rng = np.random.default_rng([*entropy, count])
        count += 1
        for chunk in _read_order(wanted, records, runs_per_read, rng):
            runs = _read_runs(source, chunk)
            plans = []  # (run_id, graph, histories, layer types, valid times)
            for run_id in chunk:
                histories, types = runs[run_id]
                _check_complete(records[run_id], histories)
                times = _valid_times(histories, c, k)
                if len(times):
                    plans.append((run_id, run_graph(records[run_id], max_feat), histories, types, times))
            draws = [i for i, _ in enumerate(plans) for _ in range(samples_per_run)]
            for i in rng.permutation(draws) if draws else []:
                run_id, graph, histories, types, times = plans[i]
                yield graph_sample(run_id, graph, histories, types, int(rng.choice(times)), c, k, eps)


def graph_batches(
    source: CollectionSource,
    run_ids: Iterable[str],
    predictor: Predictor,
    *,
    batch_size: int,
    samples_per_run: int,
    num_batches: int,
    runs_per_read: int = 8,
    seed: int | Sequence[int] = 0,
) -> Iterator[list[GraphSample]]:
    """`num_batches` batches (lists of `batch_size` samples) of the training runs, the data repeated
    as often as needed; none when no run is long enough. Under torchrun, each rank its own runs."""
    rank, world, _, _ = wds.utils.pytorch_worker_info()
    stream = graph_samples(
        source, run_ids, predictor, samples_per_run=samples_per_run, runs_per_read=runs_per_read,
        seed=seed, passes=None, rank=rank, world=world,
    )  # fmt: skip
    for _ in range(num_batches):
        batch = [s for _, s in zip(range(batch_size), stream)]
        if not batch:
            return
        yield batch


def graph_batch_loss(predictor: Predictor, batch: Sequence[GraphSample]) -> Tensor:
    """The mean of `predictor.graph_loss` over the samples of a batch (each model weighs the same)."""
    loss = predictor.graph_loss  # type: ignore[attr-defined]
    losses = [loss(s.graph, s.states, s.targets, layer_types=s.layer_types) for s in batch]
    return torch.stack(losses).mean()


def graph_validation_samples(
    source: CollectionSource,
    run_ids: Iterable[str],
    predictor: Predictor,
    *,
    samples_per_run: int,
    max_samples: int,
    seed: int = 0,
) -> list[GraphSample]:
    """The fixed validation samples: `samples_per_run` of each of at most `max_samples //
    samples_per_run` held-out runs (a seeded choice among those long enough), held in memory."""
    c, k = predictor.input_length, predictor.horizon
    records = {r["run_id"]: r for r in source.runs}
    long_enough = sorted(r for r in set(run_ids) if records[r]["snapshots"] >= c + k)
    limit = max(1, max_samples // samples_per_run)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(long_enough, size=min(limit, len(long_enough)), replace=False).tolist())
    return list(graph_samples(source, chosen, predictor, samples_per_run=samples_per_run, seed=seed))


def graph_validation_loss(predictor: Predictor, samples: Sequence[GraphSample]) -> dict[str, float]:
    """{"loss": the mean `graph_loss` over `samples`}: what `fit` validates with."""
    with torch.no_grad():
        total = sum(graph_batch_loss(predictor, [s]).item() for s in samples)
    return {"loss": total / max(len(samples), 1)}


def evaluate_graphs(
    predictor: Predictor, samples: Sequence[GraphSample], baselines: Mapping[str, Predictor] = {}
) -> dict[str, Any]:
    """Errors on whole-model samples: `loss` (the mean `graph_loss`), and per layer type the MAE
    and MSE in weight units at the main horizon K of the predictor (its graph path,
    `predict_graph`) and of each baseline (per tensor, on the same windows), with `windows`, the
    number of scalars scored: {"loss": .., "layer_types": {t: {"windows": n, "methods": {name:
    {"mae", "mse"}}}}}. Accumulated in float64."""
    k = predictor.horizon
    sums: dict[str, dict[str, list[float]]] = {}  # layer type -> method -> [abs sum, square sum]
    counts: dict[str, int] = {}
    loss = 0.0
    kind = predictor.kind
    with torch.no_grad():
        for s in samples:
            loss += graph_batch_loss(predictor, [s]).item()
            raw = s.raw_states()
            graph_path = predictor.predict_graph  # type: ignore[attr-defined]
            predicted = {kind: graph_path(s.graph, raw, k, layer_types=s.layer_types)}
            for name, baseline in baselines.items():
                predicted[name] = {
                    n: baseline.predict(w.reshape(w.shape[0], -1).T, k).reshape(w.shape[1:])
                    for n, w in raw.items()
                }
            for n, z in s.targets.items():
                truth = s.raw(n, z[k - 1].double()).reshape(-1)
                t = s.layer_types[n]
                counts[t] = counts.get(t, 0) + truth.numel()
                for method, values in predicted.items():
                    error = values[n].double().reshape(-1).cpu() - truth
                    acc = sums.setdefault(t, {}).setdefault(method, [0.0, 0.0])
                    acc[0] += error.abs().sum().item()
                    acc[1] += error.square().sum().item()
    rows = {
        t: {
            "windows": counts[t],
            "methods": {m: {"mae": a / counts[t], "mse": q / counts[t]} for m, (a, q) in by.items()},
        }
        for t, by in sums.items()
    }
    return {"loss": loss / max(len(samples), 1), "layer_types": rows}


# ---------------------------------------------------------------- private helpers


def _read_order(
    wanted: list[str], records: Mapping[str, Mapping[str, Any]], runs_per_read: int, rng: np.random.Generator
) -> Iterator[list[str]]:
    """Chunks of at most `runs_per_read` runs, each within one group (they share its shards):
    the groups in a random order, each group's runs shuffled."""
    groups: dict[str, list[str]] = {}
    for run_id in wanted:
        groups.setdefault(records[run_id]["group_id"], []).append(run_id)
    for group in rng.permutation(sorted(groups)):
        runs = rng.permutation(groups[group]).tolist()
        for begin in range(0, len(runs), runs_per_read):
            yield runs[begin : begin + runs_per_read]


def _read_runs(source: CollectionSource, run_ids: list[str]) -> dict[str, tuple[dict, dict]]:
    """run_id -> ({param name: history (T, *shape)}, {param name: layer type}), in parameter order."""
    urls = source.collection.shard_urls(run_ids=run_ids)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        partial(source.collection.read_samples, run_ids=run_ids),
        wds.map(decode_sample),
    )
    found: dict[str, list] = {r: [] for r in run_ids}
    for history in pipeline:
        found[history.run_id].append(history)
    runs = {}
    for run_id, items in found.items():
        items.sort(key=lambda h: h.param_index)
        runs[run_id] = ({h.param_name: h.values for h in items}, {h.param_name: h.layer_type for h in items})
    return runs


def _check_complete(record: Mapping[str, Any], histories: Mapping[str, Tensor]) -> None:
    missing = [p["name"] for p in record["params"] if p["name"] not in histories]
    if missing:
        raise GraphDataError(
            f"run {record['run_id']} has no history for parameter(s) {missing[:5]} in its shards; a "
            f"whole-model sample needs every parameter (the collection is damaged: collect it again)"
        )


def _valid_times(histories: Mapping[str, Tensor], c: int, k: int) -> np.ndarray:
    """Last-input times t (c-1 .. T-1-k) whose states t-c+1 .. t+k are finite for every parameter."""
    steps = min(v.shape[0] for v in histories.values())
    finite = torch.ones(steps, dtype=torch.bool)
    for values in histories.values():
        finite &= values.reshape(values.shape[0], -1)[:steps].isfinite().all(dim=1)
    ok = finite.numpy()
    return np.array([t for t in range(c - 1, steps - k) if ok[t - c + 1 : t + k + 1].all()], dtype=np.int64)
