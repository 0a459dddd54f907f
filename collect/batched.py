"""Batched collection (collect): runs of a population that can share a batch train together in one
process with `zoo.population.train_population`, and each member is recorded exactly as
`Worker.run` records a run alone: the same run ID, recorder, shards, commit record and summary.

    groups = plan_groups(specs, group_size=16, device="cpu")   # lists of RunSpec; singletons run alone
    for group in groups:
        summaries = run_group(worker, group)

Runs are grouped when they share architecture, task, batch size and optimizer kind (see
`zoo.population.group_key`; seeds, inits, augmentations, lrs, schedules and epochs may differ), up to
`group_size` at once (`engine.group_size`; 1 disables batching). On a CPU, models with convolutions
run alone: `python -m weightcast.collect.benchmark --batched` measures vmap's grouped convolution
slower there than K separate oneDNN convolutions, so batching them does not pay. On a GPU every
batchable run is grouped, and a group is split to fit the device's memory (`fit_group_size`).

Crash safety is the worker's: a member is complete once a commit lists it. A group adds its members
to the worker's writer only after it trained them all, one member at a time, committing whenever the
writer is due, so a killed group leaves its unfinished members uncommitted and the next session (which
plans its groups from the runs not yet committed) re-runs only those.
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

from weightcast.zoo.models import create_model
from weightcast.zoo.population import NotBatchable, fit_group_size, group_key, train_population
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import TrainConfig, resolve_device

from weightcast.collect.config import RunSpec, train_config
from weightcast.collect.worker import Worker

__all__ = ["CPU_GROUP_SIZE", "CPU_MIN_GROUP", "plan_groups", "run_group", "batching_pays"]

CPU_GROUP_SIZE = 16  # engine.group_size=0 on a CPU
# Fewer members than this train alone on a CPU: a group of 2-3 small MLPs ran slower than its
# members alone (vmap's per-operation overhead; `python -m weightcast.collect.benchmark --batched`).
CPU_MIN_GROUP = 4


def plan_groups(
    specs: list[RunSpec], group_size: int, device: str, only_where_it_pays: bool = True
) -> list[list[RunSpec]]:
    """`specs` as groups to train together, in the order of their first run; a run that cannot be
    batched (or, with `only_where_it_pays`, whose batching does not pay on `device`) is a group of
    one. `group_size` caps a group (0: `CPU_GROUP_SIZE` on a CPU, unlimited on a GPU, where memory
    decides in `run_group`)."""
    if group_size == 1:
        return [[spec] for spec in specs]
    on_gpu = resolve_device(device).type == "cuda"
    cap = group_size or (len(specs) if on_gpu else CPU_GROUP_SIZE)
    groups: dict[Any, list[RunSpec]] = {}
    for i, spec in enumerate(specs):
        config = train_config(spec, device)
        key: Any = ("alone", i)
        if not only_where_it_pays or batching_pays(config):
            try:
                key = group_key(config)
            except NotBatchable:
                pass
        groups.setdefault(key, []).append(spec)
    planned = []
    for members in groups.values():
        parts = -(-len(members) // cap)  # near-equal parts of at most `cap`: 17 -> 9 + 8, not 16 + 1
        planned += [members[i::parts] for i in range(parts)]
    if on_gpu or not only_where_it_pays:
        return planned
    small = [group for group in planned if len(group) < CPU_MIN_GROUP]
    return [group for group in planned if group not in small] + [[spec] for group in small for spec in group]


def batching_pays(config: TrainConfig) -> bool:
    """False for a model with convolutions on a CPU (measured slower batched there), else True."""
    if resolve_device(config.device).type == "cuda":
        return True
    key = (config.arch, repr(sorted(config.arch_kwargs.items())), config.task, config.data_dir)
    if key not in _HAS_CONV:
        model = create_model(config.arch, get_task(config.task, config.data_dir).spec, **config.arch_kwargs)
        _HAS_CONV[key] = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return not _HAS_CONV[key]


def run_group(worker: Worker, specs: list[RunSpec]) -> list[dict[str, Any]]:
    """Train `specs` together (a group of one runs alone, `worker.run`) and record each member as
    `worker.run` would; returns their summaries in order. A group larger than the device's memory
    holds is trained in several parts."""
    if len(specs) == 1:
        return [worker.run(specs[0])]
    first = worker.train_config(specs[0])
    size = fit_group_size(first, len(specs))
    summaries = []
    for begin in range(0, len(specs), size):
        summaries += _run_part(worker, specs[begin : begin + size])
    return summaries


def _run_part(worker: Worker, specs: list[RunSpec]) -> list[dict[str, Any]]:
    recorders = [worker.recorder(spec) for spec in specs]
    try:
        hooks = [[recorder, *worker.tracker.hooks(spec)] for spec, recorder in zip(specs, recorders)]
        start = time.perf_counter()
        results = train_population([worker.train_config(spec) for spec in specs], hooks)
        seconds = (time.perf_counter() - start) / len(specs)  # each member's share of the group's time
        # batched_with: the run was trained in a group of this many members
        return [
            worker.finish(spec, result.history, recorder, seconds, batched_with=len(specs))
            for spec, recorder, result in zip(specs, recorders, results)
        ]
    finally:
        for recorder in recorders:
            recorder.remove()


_HAS_CONV: dict[tuple[str, str, str, str | None], bool] = {}
