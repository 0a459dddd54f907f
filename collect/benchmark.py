"""Benchmark of the collect stage; prints its figures.

    python -m weightcast.collect.benchmark                      # overhead, peak RSS, bytes per parameter-epoch
    python -m weightcast.collect.benchmark --estimate configs/collect/zoo-cpu.yaml   # how long a config takes
    python -m weightcast.collect.benchmark --batched [--quick]  # batched populations vs one run at a time

- overhead: wall time of collecting N runs of the default zoo's models (one of each architecture,
  epochs capped) vs training the same runs with the same seeds without recording (target <= 1.05x);
- peak RSS of a process collecting one run of the default zoo's largest model, next to one that
  only trains it (each in a fresh subprocess); with `--large`, the same for a 25M-parameter MLP;
- shard bytes per recorded parameter per epoch, for each dtype;
- `--estimate CONFIG`: per-epoch times measured for every distinct (architecture, task, batch size,
  augmentation) of a config, and the collection's expected duration with its workers; with
  `engine.group_size` other than 1, its batched groups (collect.batched) are measured too;
- `--batched`: parameter-epochs per second of training populations in batched groups
  (zoo.population) against one member at a time, on an MLP-only, a CNN-only and a subset of the
  zoo-cpu population (1 epoch each), per population and per kind of member (`--quick`: a few
  members, for a test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from weightcast.configs import config_path
from weightcast.zoo.models import count_parameters, create_model
from weightcast.zoo.population import train_population
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import train

from weightcast.collect.config import (
    CollectConfig,
    GroupConfig,
    RunSpec,
    expand,
    load_collect_config,
    resolve_part,
    train_config,
)
from weightcast.collect.batched import plan_groups
from weightcast.collect.engines import run_collection, select_part
from weightcast.collect.worker import Worker
from weightcast.collect.schema import DTYPES

__all__ = [
    "main", "overhead", "peak_rss", "bytes_per_parameter_epoch", "estimate", "batching",
    "batching_populations",
]  # fmt: skip

DEFAULT_ZOO = config_path("collect", "zoo-cpu")


def overhead(zoo: Path, runs: int, epochs: int, out: Path) -> dict[str, Any]:
    """Collect `runs` runs of the zoo (one per architecture first) vs train them without recording.

    Per run, plain training is timed before and after the recorded one (their mean is the
    reference), so that drifting machine load falls on both sides; one thread, as a CPU worker.
    CPU time is reported beside wall time: on a shared machine it is the steadier figure."""
    torch.set_num_threads(1)
    specs = [_with_epochs(s, epochs) for s in _one_per_arch(expand(load_collect_config(zoo)).runs, runs)]
    config = _population_of(specs, out / "overhead", "fp32")
    train(train_config(_with_epochs(specs[0], 1)))  # warm-up: first-call costs count for neither side
    worker = Worker(out / "overhead", config, "benchmark-w00")
    plain, recorded = torch.zeros(len(specs), 2), torch.zeros(len(specs), 2)  # (run, wall | cpu) seconds
    for i, spec in enumerate(specs):
        before = _timed(lambda: train(train_config(spec)))
        recorded[i] = _timed(lambda: worker.run(spec))
        plain[i] = (before + _timed(lambda: train(train_config(spec)))) / 2
    recorded[-1] += _timed(worker.close)  # the last commit: shards closed and renamed
    config = _population_of(specs, out / "end-to-end", "fp32")
    end_to_end = _timed(lambda: run_collection(config, progress=False, echo=lambda line: None))
    wall, cpu = (recorded.sum(0) / plain.sum(0)).tolist()
    return {
        "runs": [f"{s.train['arch']} on {s.train['task']}" for s in specs],
        "epochs": epochs,
        "plain_s": round(plain[:, 0].sum().item(), 2),
        "recorded_s": round(recorded[:, 0].sum().item(), 2),
        "ratio": round(wall, 3),
        "cpu_ratio": round(cpu, 3),
        "per_run_ratio": [round(r, 3) for r in (recorded[:, 0] / plain[:, 0]).tolist()],
        # the whole command (expansion, folder, shards, index) against the plain trainings
        "end_to_end_ratio": round(end_to_end[0].item() / plain[:, 0].sum().item(), 3),
    }


def peak_rss(spec: RunSpec, epochs: int, out: Path) -> dict[str, Any]:
    """Peak RSS (MiB) of collecting vs only training one run, each in a fresh process."""
    spec = _with_epochs(spec, epochs)
    t = spec.train
    params = count_parameters(create_model(t["arch"], get_task(t["task"]).spec, **t["arch_kwargs"]))
    model = f"{t['arch']} {t['arch_kwargs']} on {t['task']}"
    result = {"model": model, "parameters": params, "epochs": epochs}
    for mode in ("train", "collect"):
        job = json.dumps({"mode": mode, "spec": asdict(spec), "out": str(out / f"rss-{mode}")})
        child = subprocess.run([sys.executable, "-m", "weightcast.collect.benchmark", "--rss-child", job],
                               check=True, capture_output=True, text=True)
        result[f"{mode}_peak_rss_mib"] = round(int(child.stdout.split()[-1]) / 1024, 1)
    return result


def largest_run(zoo: Path) -> RunSpec:
    """A run of the zoo's model with the most parameters."""
    sizes = {}
    for s in expand(load_collect_config(zoo)).runs:
        key = (s.train["arch"], json.dumps(s.train["arch_kwargs"]), s.train["task"])
        if key not in sizes:
            model = create_model(key[0], get_task(key[2]).spec, **s.train["arch_kwargs"])
            sizes[key] = (count_parameters(model), s)
    return max(sizes.values(), key=lambda v: v[0])[1]


def large_mlp_run() -> RunSpec:
    """A 25.3M-parameter MLP on shapes (256 -> 4900 -> 4900 -> 10): the scale the spool is built for."""
    group = GroupConfig(
        arch=["mlp"], arch_kwargs=[{"depth": 2, "width": 4900}], task=["shapes"], epochs=[100]
    )
    return expand(CollectConfig(name="large", population=[group])).runs[0]


def bytes_per_parameter_epoch(out: Path) -> dict[str, float]:
    """Shard bytes / (parameters x snapshots) of one conv1d run on MNIST-1D, for each dtype."""
    figures = {}
    for dtype in DTYPES:
        group = GroupConfig(arch=["conv1d"], task=["mnist1d"], epochs=[2])
        config = CollectConfig(name=f"bytes-{dtype}", out_dir=str(out / f"bytes-{dtype}"), population=[group])
        config.record.dtype = dtype
        config.engine.workers = 1
        index = run_collection(config, progress=False, echo=lambda line: None).index
        figures[dtype] = round(index["totals"]["bytes"] / index["totals"]["parameter_epochs"], 3)
    return figures


def estimate(config_path: Path, overrides: list[str] = ()) -> dict[str, Any]:
    """Expected duration of a collection (of its part) on this machine, from measured per-epoch times.

    With `engine.group_size` other than 1, the runs are planned in groups as the engines plan them
    (collect.batched); a group's time is measured for each kind of group (architecture, task, batch
    size, optimizer) at the size of its largest group, 2 epochs, and interpolated linearly in the
    number of members between one run alone and that size."""
    config = load_collect_config(config_path, overrides)
    task_seconds: dict[str, float] = {}
    for name in sorted({task for group in config.population for task in group.task}):
        start = time.perf_counter()
        get_task(name, config.data_dir)  # built once per process, as each worker does
        task_seconds[name] = time.perf_counter() - start
    expansion = expand(config)
    specs = select_part(expansion.runs, resolve_part(config.part))
    workers = config.engine.workers or min(2, os.cpu_count() or 1)
    torch.set_num_threads(config.engine.threads_per_worker or max(1, (os.cpu_count() or 1) // workers))
    timings: dict[str, tuple[float, float]] = {}  # cost key -> (seconds before epoch 1, seconds per epoch)

    def alone(spec: RunSpec) -> tuple[float, float]:
        t = spec.train
        key = json.dumps([t["arch"], t["arch_kwargs"], t["task"], t["batch_size"], t["augmentation"]])
        if key not in timings:
            records = train(train_config(_with_epochs(spec, 2))).history.records
            timings[key] = (records[0].wall_time, records[2].wall_time - records[1].wall_time)
            print(f"  measured {key}: {timings[key][1]:.3f} s/epoch", flush=True)
        return timings[key]

    groups = plan_groups(specs, config.engine.group_size, config.device)
    largest: dict[str, list[RunSpec]] = {}  # kind of group -> its largest group
    for group in groups:
        kind = _group_kind(group[0])
        if len(group) > 1 and len(group) > len(largest.get(kind, [])):
            largest[kind] = group
    grouped: dict[str, tuple[int, float, float]] = {}  # kind -> (size, seconds before epoch 1, per epoch)
    for kind, group in largest.items():
        configs = [train_config(_with_epochs(spec, 2)) for spec in group]
        start = time.perf_counter()
        records = train_population(configs)[0].history.records
        per_epoch = records[2].wall_time - records[1].wall_time
        grouped[kind] = (len(group), time.perf_counter() - start - 2 * per_epoch, per_epoch)
        print(f"  measured {len(group)} x {kind}: {per_epoch:.3f} s/epoch", flush=True)
    per_job = []
    for group in groups:
        epochs = max(spec.train["epochs"] for spec in group)
        first, per_epoch = alone(group[0])
        if len(group) > 1:  # linear in members between one alone and the measured group
            size, group_first, group_per_epoch = grouped[_group_kind(group[0])]
            share = (len(group) - 1) / max(size - 1, 1)
            first += share * (group_first - first)
            per_epoch += share * (group_per_epoch - per_epoch)
        per_job.append(first + epochs * per_epoch)
    loads = [sum(task_seconds.values())] * workers  # every worker builds every task once
    for seconds in per_job:  # the queue hands each group to the first free worker
        loads[loads.index(min(loads))] += seconds
    return {
        "runs": len(specs),
        "groups": len(groups),
        "batched_runs": sum(len(g) for g in groups if len(g) > 1),
        "workers": workers,
        "run_seconds_total": round(sum(per_job)),
        "task_build_seconds_per_worker": round(sum(task_seconds.values()), 1),
        "estimated_minutes": round(max(loads) / 60, 1),
    }


def batching_populations(zoo: Path, quick: bool = False) -> dict[str, tuple[list[RunSpec], bool]]:
    """The populations of `batching`, each with whether to group only where batching pays:
    - mlp-only: MNIST-1D 40-64-64-10 MLPs (5 epochs) and LFD-2's 1-10-1 MLP on syn2 (its zoo-cpu
      100 epochs of one step), every member grouped;
    - cnn-only: nino-cnn and wnn-cnn on shapes (1 epoch), every member grouped;
    - zoo-cpu: every 3rd run of the zoo (1 epoch), grouped as a collection groups them."""
    members = 8 if quick else 32
    mlp = [
        GroupConfig(
            mode="random", num_runs=members, arch=["mlp"], arch_kwargs=[{"depth": 2, "width": 64}],
            task=["mnist1d"], lr_range=[3e-4, 1e-2], schedule=["constant", "cosine"],
            augmentation=["none", "noise", "shift"], init=["default", "he"], batch_size=[128],
            epochs=[2 if quick else 5],
            seed=list(range(100)),
        ),
        GroupConfig(
            mode="random", num_runs=members, arch=["mlp"], arch_kwargs=[{"depth": 1, "width": 10}],
            task=["syn2"], optimizer=["sgd"], optimizer_kwargs={"momentum": 0.0}, lr_range=[2e-3, 2e-2],
            batch_size=[64], epochs=[20 if quick else 100], seed=list(range(100)),
        ),
    ]  # fmt: skip
    cnn = [
        GroupConfig(
            mode="random", num_runs=members // 2, arch=[arch], task=["shapes"], lr_range=[3e-4, 5e-3],
            augmentation=["none", "shift", "flip"], batch_size=[128], epochs=[1], seed=list(range(100)),
        )
        for arch in ("nino-cnn", "wnn-cnn")
    ]  # fmt: skip
    step = 48 if quick else 3
    zoo_runs = [_with_epochs(s, 1) for s in expand(load_collect_config(zoo)).runs[::step]]
    return {
        "mlp-only": (expand(CollectConfig(name="mlp", population=mlp)).runs, False),
        "cnn-only": (expand(CollectConfig(name="cnn", population=cnn)).runs, False),
        "zoo-cpu": (zoo_runs, True),
    }


def batching(
    populations: dict[str, tuple[list[RunSpec], bool]], group_size: int = 16, device: str = "cpu"
) -> dict[str, Any]:
    """Parameter-epochs per second of each population trained one member at a time (`zoo.train`)
    and in batched groups of up to `group_size` (`zoo.population`; `collect.batched.plan_groups`,
    only where batching pays if the population says so), per population and per kind of member.
    Wall and CPU seconds, one thread."""
    torch.set_num_threads(1)
    figures: dict[str, Any] = {}
    for name, (specs, only_where_it_pays) in populations.items():
        for task in {s.train["task"] for s in specs}:
            get_task(task)  # built before timing, as a worker builds each task once
        configs = {s.run_id: _on(train_config(s), device) for s in specs}
        kinds: dict[str, dict[str, Any]] = {}
        groups = plan_groups(specs, group_size, device, only_where_it_pays)
        for group in groups:  # alone, then batched, group by group: a drifting load falls on both
            members = [configs[s.run_id] for s in group]
            batched = _timed(lambda: train_population(members) if len(members) > 1 else train(members[0]))
            for spec, config in zip(group, members):
                empty = {"runs": 0, "alone": torch.zeros(2), "batched": torch.zeros(2)}  # (wall, cpu) seconds
                kind = kinds.setdefault(_member_kind(spec), empty)
                kind["runs"] += 1
                kind["params"] = _parameters(spec)
                kind["alone"] += _timed(lambda: train(config))
                kind["batched"] += batched / len(group)  # each member's share of its group's time
        param_epochs = sum(_parameters(s) * s.train["epochs"] for s in specs)
        alone = sum(k["alone"] for k in kinds.values())
        batched = sum(k["batched"] for k in kinds.values())
        figures[name] = {
            "runs": len(specs),
            "groups": len(groups),
            "grouped_runs": sum(len(g) for g in groups if len(g) > 1),
            "parameters_per_member": [min(map(_parameters, specs)), max(map(_parameters, specs))],
            "alone_s": round(alone[0].item(), 2),
            "batched_s": round(batched[0].item(), 2),
            "alone_param_epochs_per_s": round(param_epochs / alone[0].item()),
            "batched_param_epochs_per_s": round(param_epochs / batched[0].item()),
            "speedup": round((alone[0] / batched[0]).item(), 2),
            "cpu_speedup": round((alone[1] / batched[1]).item(), 2),
            "per_kind": {
                k: {"runs": v["runs"], "parameters": v["params"],
                    "speedup": round((v["alone"][0] / v["batched"][0]).item(), 2)}
                for k, v in sorted(kinds.items())
            },  # fmt: skip
        }
        print(f"  {name}: {figures[name]['speedup']}x", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weightcast.collect.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="the default zoo's config")
    parser.add_argument("--runs", type=int, default=6, help="runs for the overhead figure")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (capped)")
    parser.add_argument("--estimate", type=Path, metavar="CONFIG", help="estimate CONFIG's duration instead")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="--estimate: config overrides")
    parser.add_argument("--large", action="store_true", help="also peak RSS of a 25M-parameter MLP (minutes)")
    parser.add_argument("--batched", action="store_true", help="batched populations vs one run at a time")
    parser.add_argument("--quick", action="store_true", help="--batched: a few members only (a test)")
    parser.add_argument("--group-size", type=int, default=16, help="--batched: members per group")
    parser.add_argument("--device", default="cpu", help="--batched: cpu or cuda")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(json.loads(args.rss_child))
        return 0
    if args.estimate:
        print(json.dumps(estimate(args.estimate, args.overrides), indent=2))
        return 0
    if args.batched:
        populations = batching_populations(args.zoo, args.quick)
        print(json.dumps(batching(populations, args.group_size, args.device), indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="collect-benchmark-") as tmp:
        out = Path(tmp)
        figures = {
            "overhead": overhead(args.zoo, args.runs, args.epochs, out),
            "peak_rss": peak_rss(largest_run(args.zoo), args.epochs, out),
            "bytes_per_parameter_epoch": bytes_per_parameter_epoch(out),
        }
        if args.large:
            figures["peak_rss_25m"] = peak_rss(large_mlp_run(), args.epochs, out)
    print(json.dumps(figures, indent=2))
    return 0


def _rss_child(job: dict[str, Any]) -> None:
    """Train or collect one run, then print this process's peak RSS in KiB."""
    spec = RunSpec(**job["spec"])
    if job["mode"] == "train":
        train(train_config(spec))
    else:
        config = _population_of([spec], Path(job["out"]), "fp32")
        run_collection(config, progress=False, echo=lambda line: None)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _one_per_arch(specs: list[RunSpec], count: int) -> list[RunSpec]:
    """`count` runs: the first of each architecture, then the next ones, in run-ID order."""
    firsts, seen = [], set()
    for spec in specs:
        if spec.train["arch"] not in seen:
            seen.add(spec.train["arch"])
            firsts.append(spec)
    rest = [s for s in specs if s not in firsts]
    return (firsts + rest)[:count]


def _member_kind(spec: RunSpec) -> str:
    t = spec.train
    return f"{t['arch']} {json.dumps(t['arch_kwargs'])} on {t['task']}"


def _group_kind(spec: RunSpec) -> str:
    t = spec.train
    return f"{_member_kind(spec)} batch {t['batch_size']} {t['optimizer']['name']}"


def _parameters(spec: RunSpec) -> int:
    t = spec.train
    key = (t["arch"], json.dumps(t["arch_kwargs"]), t["task"])
    if key not in _PARAMETERS:
        model = create_model(t["arch"], get_task(t["task"]).spec, **t["arch_kwargs"])
        _PARAMETERS[key] = count_parameters(model)
    return _PARAMETERS[key]


_PARAMETERS: dict[tuple[str, str, str], int] = {}


def _on(config: Any, device: str) -> Any:
    config.device = device
    return config


def _with_epochs(spec: RunSpec, epochs: int) -> RunSpec:
    return RunSpec(spec.run_id, {**spec.train, "epochs": min(epochs, spec.train["epochs"])}, spec.group)


def _timed(fn: Any) -> torch.Tensor:
    """(wall, cpu) seconds of calling `fn`."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return torch.tensor([time.perf_counter() - wall, time.process_time() - cpu])


def _population_of(specs: list[RunSpec], out: Path, dtype: str) -> CollectConfig:
    """A collection config whose population is exactly these runs (one single-valued group each)."""
    groups = []
    for spec in specs:
        t = spec.train
        opt = {k: v for k, v in t["optimizer"].items() if k not in ("name", "lr")}
        sched = {k: v for k, v in t["schedule"].items() if k != "name"}
        groups.append(
            GroupConfig(
                arch=[t["arch"]],
                arch_kwargs=[t["arch_kwargs"]],
                task=[t["task"]],
                optimizer=[t["optimizer"]["name"]],
                optimizer_kwargs=opt,
                lr=[t["optimizer"]["lr"]],
                schedule=[t["schedule"]["name"]],
                schedule_kwargs=sched,
                batch_size=[t["batch_size"]],
                augmentation=[t["augmentation"]],
                init=[t["init"]],
                epochs=[t["epochs"]],
                seed=[t["seed"]],
            )
        )
    config = CollectConfig(name="benchmark", out_dir=str(out), population=groups)
    config.record.dtype = dtype
    config.engine.workers = 1
    config.engine.threads_per_worker = 1
    return config


if __name__ == "__main__":
    sys.exit(main())
