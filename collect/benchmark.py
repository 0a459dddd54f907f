"""Benchmark of the collect stage; prints its figures.

    python -m weightcast.collect.benchmark                      # overhead, peak RSS, bytes per parameter-epoch
    python -m weightcast.collect.benchmark --estimate configs/collect/zoo-cpu.yaml   # how long a config takes

- overhead: wall time of collecting N runs of the default zoo's models (one of each architecture,
  epochs capped) vs training the same runs with the same seeds without recording (target <= 1.05x);
- peak RSS of a process collecting one run of the default zoo's largest model, next to one that
  only trains it (each in a fresh subprocess); with `--large`, the same for a 25M-parameter MLP;
- shard bytes per recorded parameter per epoch, for each dtype;
- `--estimate CONFIG`: per-epoch times measured for every distinct (architecture, task, batch size,
  augmentation) of a config, and the collection's expected duration with its workers.
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
from weightcast.collect.engines import run_collection, select_part
from weightcast.collect.worker import Worker
from weightcast.collect.schema import DTYPES

__all__ = ["main", "overhead", "peak_rss", "bytes_per_parameter_epoch", "estimate"]

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
    """Expected duration of a collection (of its part) on this machine, from measured per-epoch times."""
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
    per_run = []
    for spec in specs:
        t = spec.train
        key = json.dumps([t["arch"], t["arch_kwargs"], t["task"], t["batch_size"], t["augmentation"]])
        if key not in timings:
            records = train(train_config(_with_epochs(spec, 2))).history.records
            timings[key] = (records[0].wall_time, records[2].wall_time - records[1].wall_time)
            print(f"  measured {key}: {timings[key][1]:.3f} s/epoch", flush=True)
        first, per_epoch = timings[key]
        per_run.append(first + t["epochs"] * per_epoch)
    loads = [sum(task_seconds.values())] * workers  # every worker builds every task once
    for seconds in per_run:  # the queue hands each run to the first free worker
        loads[loads.index(min(loads))] += seconds
    return {
        "runs": len(specs),
        "workers": workers,
        "run_seconds_total": round(sum(per_run)),
        "task_build_seconds_per_worker": round(sum(task_seconds.values()), 1),
        "estimated_minutes": round(max(loads) / 60, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weightcast.collect.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=DEFAULT_ZOO, help="the default zoo's config")
    parser.add_argument("--runs", type=int, default=6, help="runs for the overhead figure")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (capped)")
    parser.add_argument("--estimate", type=Path, metavar="CONFIG", help="estimate CONFIG's duration instead")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="--estimate: config overrides")
    parser.add_argument("--large", action="store_true", help="also peak RSS of a 25M-parameter MLP (minutes)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        _rss_child(json.loads(args.rss_child))
        return 0
    if args.estimate:
        print(json.dumps(estimate(args.estimate, args.overrides), indent=2))
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
