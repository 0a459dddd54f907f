"""Execution of a collection (collect): expand the population, take this job's static partition,
skip committed runs, clean up after crashes, fan the rest out to workers, and write the index.

Engines, all driving the same `collect.worker.Worker` with the same torch thread count
(`engine.threads_per_worker`, 1 by default; each run record keeps it) and so producing the same runs
bit for bit (other thread counts split reductions differently and change the last bits):
- `local` (default): worker processes on this machine (spawned; one per GPU when there are GPUs,
  else `engine.workers` CPU workers), or the worker in this very process when there is one.
- `ray`: one actor per worker on a Ray cluster (`ray start --head`, `ray start --address=...`, then
  `weightcast collect ... engine.name=ray engine.address=auto`); `engine.num_gpus` is the GPU
  fraction of each actor. `out_dir` (and `data_dir`) must be on a filesystem that every node mounts
  at the same path, and weightcast must be installed on every node.
Static partitions (`part=i/N`, or SLURM array variables) run the runs whose index % N == i under
the shard prefix `part<i>of<N>`; `weightcast collect merge-index` joins them.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import traceback
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from weightcast.zoo.config import config_to_dict
from weightcast.zoo.registry import Registry

from weightcast.collect.batched import plan_groups, run_group
from weightcast.collect.config import CollectConfig, Expansion, RunSpec, expand, resolve_part
from weightcast.collect.errors import CollectError
from weightcast.collect.folder import CollectionFolder
from weightcast.collect.index import INDEX_NAME, write_index
from weightcast.collect.tracking import CollectionTracker
from weightcast.collect.worker import Worker

__all__ = ["ENGINES", "CollectResult", "run_collection", "part_prefix", "select_part"]

OnResult = Callable[[dict[str, Any]], None]
# An engine runs `specs` into the folder `root` with shard prefix `prefix`, calling `on_result`
# with each finished run's summary; it commits every finished run before it returns or raises.
Engine = Callable[[CollectConfig, Path, list[RunSpec], str, OnResult], None]
ENGINES: Registry[Engine] = Registry("engine")

_PR_SET_PDEATHSIG = 1  # prctl option, from <linux/prctl.h>


@dataclass
class CollectResult:
    root: Path
    expansion: Expansion
    part: tuple[int, int] | None
    selected: int  # runs of this part
    already_complete: int  # of those, committed before this invocation
    finished: list[dict[str, Any]]  # summaries of the runs finished now
    index: dict[str, Any] | None  # the index, once every run of the collection is committed


def part_prefix(part: tuple[int, int] | None) -> str:
    """Shard prefix of a partition: `part<i>of<N>`, or `all`."""
    return "all" if part is None else f"part{part[0]}of{part[1]}"


def select_part(specs: list[RunSpec], part: tuple[int, int] | None) -> list[RunSpec]:
    """The runs of partition (i, N): those whose position in the sorted population is i mod N."""
    if part is None:
        return list(specs)
    i, n = part
    return [spec for k, spec in enumerate(specs) if k % n == i]


def run_collection(
    config: CollectConfig, *, progress: bool = True, echo: Callable[[str], None] = print
) -> CollectResult:
    """Collect every run of `config` (of its part) that is not committed yet; resumable after any crash."""
    engine = ENGINES.get(config.engine.name)
    expansion = expand(config)
    part = resolve_part(config.part)
    prefix = part_prefix(part)
    tracker = CollectionTracker(config, prefix)  # checks a wandb login before any work
    specs = select_part(expansion.runs, part)
    folder = CollectionFolder(config.out_dir, config.record.spool_dir)
    record = {"dtype": config.record.dtype, "every_steps": config.record.every_steps}
    folder.prepare(config, config.name, expansion.population_hash, [s.run_id for s in expansion.runs], record)
    with folder.lock(prefix):
        if folder.manifest()["population_hash"] != expansion.population_hash:  # changed since prepare
            raise CollectError(f"another session gave {folder.root} another population; start again")
        removed = folder.clean(prefix)
        done = folder.completed_runs()
        todo = [s for s in specs if s.run_id not in done]
        echo(expansion.summary())
        where = "" if part is None else f" in part {part[0]}/{part[1]}"
        done_here = len(specs) - len(todo)
        echo(f"{len(specs)} runs{where}: {done_here} already complete, {len(todo)} to run -> {folder.root}")
        if removed:
            echo(f"removed {len(removed)} leftover file(s) of an interrupted session")
        finished = _execute(engine, config, folder, todo, prefix, len(specs), progress)
        committed = folder.completed_runs()
        index = None
        if all(s.run_id in committed for s in expansion.runs):
            index = write_index(folder.root)
            folder.clean(None)  # the collection is complete: no session of any part can be running
    tracker.close(folder.root / INDEX_NAME, index, len(finished))
    return CollectResult(folder.root, expansion, part, len(specs), len(specs) - len(todo), finished, index)


def _execute(
    engine: Engine,
    config: CollectConfig,
    folder: CollectionFolder,
    todo: list[RunSpec],
    prefix: str,
    total: int,
    progress: bool,
) -> list[dict[str, Any]]:
    """Run `todo` on `engine` with a progress bar and a log line per finished run."""
    finished: list[dict[str, Any]] = []
    bar = tqdm(total=total, initial=total - len(todo), unit="run", disable=not progress, dynamic_ncols=True)

    def on_result(summary: dict[str, Any]) -> None:
        finished.append(summary)
        metric = summary["final_metric"]
        folder.log(
            f"run {summary['run_id']} {summary['status']} {summary['arch']} on {summary['task']} "
            f"{summary['optimizer']} lr={summary['lr']:g} {summary['metric_name']}="
            f"{'nan' if metric is None else f'{metric:.4f}'} snapshots={summary['snapshots']} "
            f"seconds={summary['seconds']:.1f}"
        )
        bar.update(1)

    try:
        if todo:
            engine(config, folder.root, todo, prefix, on_result)
    finally:
        bar.close()
    return finished


@ENGINES.register("local")
def run_local(
    config: CollectConfig, root: Path, specs: list[RunSpec], prefix: str, on_result: OnResult
) -> None:
    """Worker processes on this machine; the worker runs in this process when there is only one."""
    gpus = torch.cuda.device_count() if config.device in ("auto", "cuda") else 0
    workers = config.engine.workers or gpus or min(2, os.cpu_count() or 1)
    workers = min(workers, len(specs))
    threads = config.engine.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)  # 0: automatic
    devices = [f"cuda:{i % gpus}" if gpus else config.device for i in range(workers)]
    if workers == 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _run_serially(Worker(root, config, _session(prefix, 0), devices[0]), specs, on_result)
        finally:
            torch.set_num_threads(previous)
        return
    _run_processes(config, root, specs, prefix, on_result, devices, threads)


@ENGINES.register("ray")
def run_ray(
    config: CollectConfig, root: Path, specs: list[RunSpec], prefix: str, on_result: OnResult
) -> None:
    """One Ray actor per worker, each reserving `engine.num_cpus` CPUs and `engine.num_gpus` GPUs."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError:
        raise CollectError("engine.name=ray needs Ray: pip install 'weightcast[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=config.engine.address, log_to_driver=False)
    engine = config.engine
    resources = ray.cluster_resources()
    _check_ray_resources(engine, [n["Resources"] for n in ray.nodes() if n.get("Alive")], resources)
    workers = engine.workers or max(1, int(resources.get("CPU", 1) // max(engine.num_cpus, 1e-6)))
    if engine.num_gpus > 0:
        workers = min(workers, max(1, int(resources.get("GPU", 0) / engine.num_gpus)))
    workers = min(workers, len(specs))
    threads = engine.threads_per_worker or max(1, int(engine.num_cpus))  # 0: automatic
    actor_class = ray.remote(num_cpus=engine.num_cpus, num_gpus=engine.num_gpus)(_RayWorker)
    cfg = config_to_dict(config)
    actors = [actor_class.remote(str(root), cfg, _session(prefix, i), threads) for i in range(workers)]
    actors = _scheduled(ray, actors, engine, resources)
    pool = ActorPool(actors)
    try:
        jobs = [[asdict(s) for s in group] for group in plan_groups(specs, engine.group_size, config.device)]
        for summaries in pool.map_unordered(lambda actor, group: actor.run_group.remote(group), jobs):
            for summary in summaries:
                on_result(summary)
    except BaseException as err:
        ray.get([actor.close_quietly.remote() for actor in actors])
        for actor in actors:
            ray.kill(actor)
        if isinstance(err, ray.exceptions.RayError):
            raise CollectError(
                f"a run failed on the Ray cluster; finished runs are committed, run the same command again "
                f"to resume. {err}"
            ) from None
        raise
    ray.get([actor.close.remote() for actor in actors])
    for actor in actors:
        ray.kill(actor)


def _check_ray_resources(engine: Any, nodes: list[dict[str, float]], total: dict[str, float]) -> None:
    """Refuse, before any actor is asked for, a worker that no node of the cluster can hold (Ray
    would keep it pending forever, its "infeasible" warning hidden by log_to_driver=False)."""
    asked = {"CPU": engine.num_cpus, "GPU": engine.num_gpus}
    for name, amount in asked.items():
        if amount > 0 and not any(node.get(name, 0) >= amount for node in nodes):
            have = ", ".join(f"{k}={v:g}" for k, v in sorted(total.items()) if k in ("CPU", "GPU")) or "none"
            fix = (
                "set engine.num_gpus=0 to train on CPUs, or start the cluster on machines with GPUs "
                "(ray start ... --num-gpus=N)"
                if name == "GPU"
                else "lower engine.num_cpus, or add larger nodes"
            )
            raise CollectError(
                f"engine.num_{name.lower()}s={amount:g}: no node of the Ray cluster at "
                f"{engine.address or 'a local instance'} has {amount:g} {name} (cluster: {have}); {fix}"
            )


def _scheduled(ray: Any, actors: list[Any], engine: Any, resources: dict[str, float]) -> list[Any]:
    """The actors that Ray has started within `engine.schedule_timeout_s`; the others are killed.
    None started: CollectError saying what each asks for and what the cluster has."""
    refs = [actor.ready.remote() for actor in actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=engine.schedule_timeout_s)
    started = [actor for actor, ref in zip(actors, refs) if ref in ready]
    for actor, ref in zip(actors, refs):
        if ref not in ready:
            ray.kill(actor)
    if not started:
        raise CollectError(
            f"no Ray worker was scheduled within engine.schedule_timeout_s={engine.schedule_timeout_s:g} s: "
            f"each asks for {engine.num_cpus:g} CPU and {engine.num_gpus:g} GPU, the cluster has "
            f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU, all busy or held by other "
            "jobs (see `ray status`); free them, lower engine.num_cpus/num_gpus, or raise the timeout"
        )
    if len(started) < len(actors):
        print(
            f"note: {len(actors) - len(started)} of {len(actors)} Ray workers were not scheduled within "
            f"{engine.schedule_timeout_s:g} s; collecting with {len(started)}",
            file=sys.stderr,
        )
    return started


class _RayWorker:
    """A `Worker` living in a Ray actor process."""

    def __init__(self, root: str, config: dict[str, Any], session: str, threads: int):
        torch.set_num_threads(threads)
        self.worker = Worker(root, _config_from_dict(config), session)

    def ready(self) -> bool:
        """Answers once the actor is scheduled and its worker built."""
        return True

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.worker.run(RunSpec(**spec))

    def run_group(self, group: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return run_group(self.worker, [RunSpec(**spec) for spec in group])

    def close(self) -> None:
        self.worker.close()

    def close_quietly(self) -> None:
        _close_quietly(self.worker)


def _session(prefix: str, worker: int) -> str:
    """`<prefix>-w<worker>-<random>`: unique per worker session, so groups never collide."""
    return f"{prefix}-w{worker:02d}-{uuid.uuid4().hex[:8]}"


def _config_from_dict(config: dict[str, Any]) -> CollectConfig:
    merged = OmegaConf.merge(OmegaConf.structured(CollectConfig), config)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def _run_serially(worker: Worker, specs: list[RunSpec], on_result: OnResult) -> None:
    spec = None
    try:
        for group in plan_groups(specs, worker.config.engine.group_size, worker.device):
            spec = group[0]
            for summary in run_group(worker, group):
                on_result(summary)
    except CollectError:
        _close_quietly(worker)  # commit the runs finished before the failure
        raise
    except Exception as err:
        _close_quietly(worker)
        raise CollectError(
            f"run {spec.run_id} ({spec.train['arch']} on {spec.train['task']}) failed: {type(err).__name__}: "
            f"{err}. Runs finished before it are committed; run the same command again to resume."
        ) from err
    except BaseException:  # KeyboardInterrupt, SystemExit
        _close_quietly(worker)
        raise
    worker.close()


def _close_quietly(worker: Worker) -> None:
    """Commit what can be committed; if even that fails, leave only temporary files behind."""
    try:
        worker.close()
    except Exception:
        worker.abandon()


def _run_processes(
    config: CollectConfig,
    root: Path,
    specs: list[RunSpec],
    prefix: str,
    on_result: OnResult,
    devices: list[str],
    threads: int,
) -> None:
    """One spawned worker process per device, fed from a queue; the first failure stops them all."""
    ctx = mp.get_context("spawn")  # fork would copy the parent's torch threads and CUDA state
    tasks, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    _queue_specs(tasks, plan_groups(specs, config.engine.group_size, devices[0]), len(devices))
    cfg = config_to_dict(config)
    processes = [
        ctx.Process(
            target=_process_main,
            args=(str(root), cfg, _session(prefix, i), device, threads, tasks, results, stop, os.getpid()),
            name=f"collect-worker-{i}",
        )
        for i, device in enumerate(devices)
    ]
    for process in processes:
        process.start()
    try:
        errors = _gather_results(processes, results, stop, on_result)
    except BaseException:
        stop.set()
        for process in processes:
            process.join(timeout=60)
        raise
    for process in processes:
        process.join()
    if errors:
        raise CollectError(
            "collection stopped; runs finished before the failure are committed, run the same command "
            "again to resume.\n" + "\n".join(errors)
        )


def _queue_specs(tasks: Any, groups: list[list[RunSpec]], workers: int) -> None:
    """Every group of specs (collect.batched), then one stop sentinel per worker."""
    for group in groups:
        tasks.put([asdict(spec) for spec in group])
    for _ in range(workers):
        tasks.put(None)
    tasks.cancel_join_thread()  # leftover specs after a stop must not block the parent's exit


def _gather_results(processes: list[Any], results: Any, stop: Any, on_result: OnResult) -> list[str]:
    """Pass each finished run to `on_result` until every worker has exited; returns the errors of
    workers that failed or died (and sets `stop` at the first one)."""
    errors: list[str] = []
    exited: set[str] = set()
    silent: dict[str, int] = {}  # dead worker -> polls since; its last message may still be in the pipe
    while len(exited) < len(processes):
        try:
            kind, name, payload = results.get(timeout=1.0)
        except queue.Empty:
            for process in _silently_dead(processes, exited, silent):
                exited.add(process.name)
                stop.set()
                errors.append(f"{process.name} died (exit code {process.exitcode}: killed? out of memory?)")
            continue
        if kind == "done":
            on_result(payload)
        else:  # "exit" or "error": the worker has committed what it finished and stops
            exited.add(name)
            if kind == "error":
                stop.set()
                errors.append(f"{name}: {payload}")
    return errors


def _silently_dead(processes: list[Any], exited: set[str], silent: dict[str, int]) -> list[Any]:
    """Workers that ended without a last message, after two quiet polls (it may still be in the pipe)."""
    dead = []
    for process in processes:
        if process.exitcode is not None and process.name not in exited:
            silent[process.name] = silent.get(process.name, 0) + 1
            if silent[process.name] >= 2:
                dead.append(process)
    return dead


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this worker when its parent dies (even by SIGKILL): an orphan
    would go on writing into a folder that the next session cleans up."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _process_main(
    root: str,
    config: dict[str, Any],
    session: str,
    device: str,
    threads: int,
    tasks: Any,
    results: Any,
    stop: Any,
    parent: int,
) -> None:
    """A worker process: pull specs until the sentinel (or a stop), report each finished run."""
    _die_with_parent(parent)
    name = mp.current_process().name
    torch.set_num_threads(threads)
    try:
        worker = Worker(root, _config_from_dict(config), session, device)
    except BaseException as err:
        results.put(("error", name, f"{type(err).__name__}: {err}"))
        return
    try:
        while not stop.is_set():
            group = tasks.get()
            if group is None:
                break
            for summary in run_group(worker, [RunSpec(**spec) for spec in group]):
                results.put(("done", name, summary))
    except BaseException as err:
        _close_quietly(worker)
        detail = "".join(traceback.format_exception(err)[-3:]).strip()
        results.put(("error", name, f"{type(err).__name__}: {err}\n{detail}"))
        sys.exit(1)
    worker.close()
    results.put(("exit", name, None))
