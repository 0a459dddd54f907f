"""The input pipeline of the train_predictor stage: webdataset stages that turn a collection's shards
into batches of (window, target) pairs for one layer type, and the fixed validation windows.

    shards of one layer type (split by node and DataLoader worker; by sample if there are too few)
      -> tar samples of the wanted runs (`Collection.read_samples`: each shard's size and sample
         count checked against the index) -> decode_sample (sha256 checked)
      -> cut windows at random epochs and scalars
      -> shuffle in a bounded buffer, batch -> repeat (with_epoch): every rank gets as many batches

A window of a history (T, *shape), scalars flattened to (T, S): at scalar s and last-input time t,
the input is values[t - L + 1 .. t, s] (L = input_length) and the targets are values[t + h, s] for
each h of the predictor's horizons. Memory stays bounded whatever the collection's size: one decoded
history, the shuffle buffer, and at most `max_windows` validation windows.

The collection is a local folder or a URL webdataset opens (`http://host/collection`, `pipe:...`),
read through collect's `Collection` only: a damaged shard raises `CorruptShardError`, never a
smaller training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from torch import Tensor

from weightcast.collect import Collection, ParamHistory, decode_sample
from weightcast.collect.reader import is_url
from weightcast.zoo.config import ConfigError

from weightcast.train_predictor.predictors import Predictor

__all__ = [
    "WindowSpec",
    "Windows",
    "CollectionSource",
    "open_collection",
    "select_runs",
    "split_runs",
    "cut_windows",
    "train_batches",
    "validation_windows",
]

Batch = tuple[Tensor, Tensor]  # windows (B, L), targets (B, len(horizons))


@dataclass(frozen=True)
class WindowSpec:
    """The geometry of a predictor's training pairs."""

    input_length: int
    horizons: tuple[int, ...]

    @classmethod
    def of(cls, predictor: Predictor) -> WindowSpec:
        return cls(predictor.input_length, tuple(predictor.horizons))

    @property
    def span(self) -> int:
        """Snapshots one window needs: its inputs and its farthest target."""
        return self.input_length + max(self.horizons)


@dataclass
class Windows:
    """Training pairs held in memory: inputs (N, L) and targets (N, len(horizons)), float32."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @classmethod
    def empty(cls, spec: WindowSpec) -> Windows:
        return cls(torch.empty(0, spec.input_length), torch.empty(0, len(spec.horizons)))

    @classmethod
    def cat(cls, parts: Sequence[Windows], spec: WindowSpec) -> Windows:
        if not parts:
            return cls.empty(spec)
        return cls(torch.cat([p.inputs for p in parts]), torch.cat([p.targets for p in parts]))


@dataclass(frozen=True)
class CollectionSource:
    """A finished collection to read (collect's `Collection`) and its full run records."""

    collection: Collection
    runs: list[dict[str, Any]]  # full run records (config, labels, status, params), sorted by run ID

    @property
    def location(self) -> str:
        return self.collection.location

    @property
    def index(self) -> dict[str, Any]:
        return self.collection.index

    @property
    def name(self) -> str:
        return self.collection.name

    def shard_urls(self, layer_type: str, run_ids: set[str]) -> list[str]:
        """URLs of the shards holding `layer_type` histories of any of `run_ids` (a shard holds a
        group of runs; one whose wanted runs have no such parameter is left out)."""
        having = {
            r["run_id"]
            for r in self.runs
            if r["run_id"] in run_ids and any(p["layer_type"] == layer_type for p in r["params"])
        }
        return self.collection.shard_urls(layer_type, run_ids=having)

    def trajectories(self, run_ids: set[str], layer_types: Iterable[str]) -> int:
        """Number of parameter histories of `layer_types` in the runs `run_ids`."""
        wanted = set(layer_types)
        runs = [r for r in self.runs if r["run_id"] in run_ids]
        return sum(p["layer_type"] in wanted for r in runs for p in r["params"])


def open_collection(location: str) -> CollectionSource:
    """Open a finished collection: a local folder, or a URL webdataset's `gopen` reads."""
    if not is_url(location) and not Path(location).is_dir():
        raise ConfigError(
            f"collection {location!r} does not exist; make it with `weightcast collect --config "
            f"configs/collect/<name>.yaml`, or set collection= to a collection folder or URL"
        )
    collection = Collection(location)
    return CollectionSource(collection, sorted(collection.runs(), key=lambda r: r["run_id"]))


def select_runs(
    source: CollectionSource, *, split: str | None, statuses: Sequence[str]
) -> list[dict[str, Any]]:
    """Run records of tasks of `split` (None: every split) whose status is one of `statuses`."""
    runs = [r for r in source.runs if split in (None, r["split"]) and r["status"] in statuses]
    if not runs:
        found = sorted({(r["split"], r["status"]) for r in source.runs})
        raise ConfigError(
            f"collection {source.name!r} has no run with split={split!r} and status in {list(statuses)}; "
            f"its runs have (split, status) {found}"
        )
    return runs


def split_runs(
    runs: Sequence[dict[str, Any]], *, by: str, fraction: float, holdout: Sequence[str] = (), seed: int = 0
) -> tuple[set[str], set[str]]:
    """(training run IDs, validation run IDs): disjoint, whole runs. `by="run"` holds out
    `fraction` of each architecture's runs (at least one of an architecture with two or more);
    `by="task"`/`"arch"` holds out `fraction` of the tasks / architectures (at least one) and all
    their runs. Explicit `holdout` names (run IDs, tasks or architectures) replace the draw."""
    key = {"run": "run_id", "task": "task", "arch": "arch"}[by]
    names = sorted({r[key] for r in runs})
    if holdout:
        unknown = sorted(set(holdout) - set(names))
        if unknown:
            raise ConfigError(
                f"val_holdout names {unknown}, which are not {by}s of the selected runs: {names[:20]}"
            )
        held = set(holdout)
    else:
        rng = np.random.default_rng(seed)
        if by == "run":  # stratified: each architecture's layer types get validation data
            held = set()
            for arch in sorted({r["arch"] for r in runs}):
                ids = sorted(r["run_id"] for r in runs if r["arch"] == arch)
                count = min(max(round(fraction * len(ids)), 1), len(ids) - 1)
                held.update(rng.choice(ids, size=count, replace=False).tolist())
        else:
            count = min(max(round(fraction * len(names)), 1), len(names) - 1)
            held = set(rng.choice(names, size=count, replace=False).tolist()) if count > 0 else set()
    val = {r["run_id"] for r in runs if r[key] in held}
    train = {r["run_id"] for r in runs} - val
    if not val or not train:
        raise ConfigError(
            f"holding out by {by} leaves {len(train)} training and {len(val)} validation runs; both need "
            f"at least one (the selected runs have {len(names)} distinct {by}s: {names[:10]})"
        )
    return train, val


def cut_windows(values: Tensor, spec: WindowSpec, count: int, generator: torch.Generator) -> Windows:
    """Up to `count` windows of one history `values` (T, *shape) at uniformly random (time, scalar)
    pairs, drawn with replacement, as float32; pairs with a non-finite value are dropped. Empty
    if T < spec.span."""
    steps = values.shape[0]
    flat = values.reshape(steps, -1)  # (T, S)
    times = steps - spec.span + 1  # valid last-input times: L-1 .. T-1-max(horizons)
    if times < 1 or flat.shape[1] == 0:
        return Windows.empty(spec)
    count = min(count, times * flat.shape[1])
    t = torch.randint(times, (count, 1), generator=generator) + spec.input_length - 1  # (k, 1)
    s = torch.randint(flat.shape[1], (count, 1), generator=generator)  # (k, 1)
    past = torch.arange(1 - spec.input_length, 1)  # (L,): offsets of the inputs from t
    inputs = flat[t + past, s].float()  # (k, L)
    targets = flat[t + torch.tensor(spec.horizons), s].float()  # (k, H)
    finite = inputs.isfinite().all(dim=1) & targets.isfinite().all(dim=1)
    if not finite.all():
        inputs, targets = inputs[finite], targets[finite]
    return Windows(inputs, targets)


def train_batches(
    source: CollectionSource,
    layer_type: str,
    run_ids: set[str],
    spec: WindowSpec,
    *,
    batch_size: int,
    windows_per_history: int,
    shuffle_buffer: int,
    num_batches: int,
    seed: int | Sequence[int] = 0,
    num_workers: int = 0,
) -> Iterable[Batch]:
    """Shuffled training batches of one layer type from the runs `run_ids`: `num_batches` per
    process (DataLoader worker, with `num_workers`), the data repeated as often as needed, or none
    at all when there is no training window. Under torchrun, ranks read disjoint shards (disjoint
    samples when there are fewer shards than ranks x workers). `seed` (one or more ints) seeds the
    shard order, the window cuts and the shuffling."""
    urls = source.shard_urls(layer_type, run_ids)
    if not urls:
        return []
    _, world, _, _ = wds.utils.pytorch_worker_info()
    shard_split = len(urls) >= world * max(num_workers, 1)
    splitters = [wds.split_by_node, wds.split_by_worker]
    seeds = _seeds(seed)
    # Shards in one seeded order on every rank. Split by shard, each rank reorders its own shards
    # every pass; split by sample, the order must stay the same on every rank and in every pass,
    # or a sample would move between ranks.
    reorder = [wds.detshuffle(len(urls), initial=len(urls), seed=seeds[0])]
    stages = [
        wds.SimpleShardList(urls, seed=seeds[0]),
        *(splitters + reorder if shard_split else []),
        partial(source.collection.read_samples, run_ids=run_ids),
        *([] if shard_split else splitters),
        wds.map(decode_sample),
        _CutWindows(spec, windows_per_history, seeds[1]),
        _ShuffleBatches(shuffle_buffer, batch_size, seeds[2]),
    ]
    pipeline = wds.DataPipeline(*stages).with_epoch(nbatches=num_batches)
    if num_workers:
        return wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers)
    return pipeline


def validation_windows(
    source: CollectionSource,
    layer_type: str,
    run_ids: set[str],
    spec: WindowSpec,
    *,
    windows_per_history: int,
    max_windows: int,
    seed: int = 0,
) -> Windows:
    """The fixed validation set of one layer type: `windows_per_history` windows of every history
    of `run_ids`, then a uniform random sample of at most `max_windows` of them (deterministic in
    `seed`; never split across ranks)."""
    urls = source.shard_urls(layer_type, run_ids)
    if not urls:
        return Windows.empty(spec)
    generator = torch.Generator().manual_seed(seed)
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(urls),
        partial(source.collection.read_samples, run_ids=run_ids),
        wds.map(decode_sample),
    )
    kept: list[Windows] = []
    keys: list[Tensor] = []  # a uniform key per window: the smallest max_windows keys are the sample
    held = 0
    for history in pipeline:
        chunk = cut_windows(history.values, spec, windows_per_history, generator)
        kept.append(chunk)
        keys.append(torch.rand(len(chunk), generator=generator))
        held += len(chunk)
        if held > 2 * max_windows:
            kept, keys = _smallest_keys(kept, keys, max_windows, spec)
            held = max_windows
    kept, keys = _smallest_keys(kept, keys, max_windows, spec)
    return kept[0]


class _CutWindows:
    """Stage: histories -> chunks of windows (`per_history` per history); a new seed every pass
    over the data, different per rank and DataLoader worker."""

    def __init__(self, spec: WindowSpec, per_history: int, seed: int):
        self.spec, self.per_history, self.seed = spec, per_history, seed
        self.passes = 0

    def __call__(self, histories: Iterator[ParamHistory]) -> Iterator[Windows]:
        generator = torch.Generator().manual_seed(_stream_seed(self.seed, self.passes))
        self.passes += 1
        for history in histories:
            chunk = cut_windows(history.values, self.spec, self.per_history, generator)
            if len(chunk):
                yield chunk


class _ShuffleBatches:
    """Stage: chunks of windows -> shuffled batches, through a buffer of about `buffer` windows:
    once full, it is permuted and batches are taken until half of it is left. Windows of one
    history are thus spread over many batches; memory is bounded by `buffer` + one chunk."""

    def __init__(self, buffer: int, batch_size: int, seed: int):
        self.buffer, self.batch_size, self.seed = buffer, batch_size, seed
        self.passes = 0

    def __call__(self, chunks: Iterator[Windows]) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(_stream_seed(self.seed, self.passes))
        self.passes += 1
        held: list[Windows] = []
        size = 0
        for chunk in chunks:
            held.append(chunk)
            size += len(chunk)
            if size < self.buffer:
                continue
            pool = self._permuted(held, generator)
            emit = (size - self.buffer // 2) // self.batch_size * self.batch_size
            yield from self._batches(pool, emit)
            held = [Windows(pool.inputs[emit:], pool.targets[emit:])]
            size -= emit
        if size:  # the end of a pass: what is left, shuffled, the last batch possibly partial
            pool = self._permuted(held, generator)
            yield from self._batches(pool, size)

    def _permuted(self, held: list[Windows], generator: torch.Generator) -> Windows:
        inputs = torch.cat([w.inputs for w in held])
        targets = torch.cat([w.targets for w in held])
        order = torch.randperm(len(inputs), generator=generator)
        return Windows(inputs[order], targets[order])

    def _batches(self, pool: Windows, count: int) -> Iterator[Batch]:
        for start in range(0, count, self.batch_size):
            stop = min(start + self.batch_size, count)
            yield pool.inputs[start:stop], pool.targets[start:stop]


def _seeds(seed: int | Sequence[int]) -> list[int]:
    """Three independent 31-bit seeds (shard order, window cuts, shuffling) from one or more ints."""
    entropy = [seed] if isinstance(seed, int) else list(seed)
    return [int(s) >> 1 for s in np.random.SeedSequence(entropy).generate_state(3)]


def _stream_seed(seed: int, passes: int) -> int:
    """Seed of one pass of one stage in this process: differs by rank, DataLoader worker and pass."""
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    return int(np.random.SeedSequence([seed, rank, worker, passes]).generate_state(1)[0])


def _smallest_keys(
    kept: list[Windows], keys: list[Tensor], limit: int, spec: WindowSpec
) -> tuple[list[Windows], list[Tensor]]:
    """Concatenate, and keep the `limit` windows with the smallest keys (a uniform sample)."""
    windows = Windows.cat(kept, spec)
    all_keys = torch.cat(keys) if keys else torch.empty(0)
    if len(windows) > limit:
        chosen = all_keys.topk(limit, largest=False).indices.sort().values
        windows = Windows(windows.inputs[chosen], windows.targets[chosen])
        all_keys = all_keys[chosen]
    return [windows], [all_keys]
