"""`python -m weightcast.gpu_check`: run every GPU path of weightcast once, at toy size, on one
GPU, and print what passed (a few minutes on one GPU; every check has its own time limit):

1. train-cuda       the zoo's training loop (`zoo.train.train`) on CUDA
2. population-cuda  the batched population trainer (`zoo.population.train_population`) on CUDA
3. nowcaster-cuda   the nowcaster (`eval.runtime.NowcastHook`, the shipped WNN bundle, the guard on)
                    applied to a CUDA run
4. ray-gpu-fraction collect on a local Ray instance with `engine.num_gpus=0.5` (two workers on one
                    GPU), into a small collection that the next check reads
5. ddp-nccl         train-predictor under `torchrun --nproc_per_node=1` with the process group on
                    NCCL, so the predictors train wrapped in DistributedDataParallel on CUDA

Without CUDA every check is reported as skipped and the exit code is 0; with CUDA the exit code is
1 when any check failed. `--keep DIR` keeps the collection and bundles made (default: a temporary
folder). `--device cpu` runs the same checks' code on the CPU (Ray without a GPU fraction, the
process group on gloo): a dry run of the script itself where there is no GPU, not a GPU check.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

__all__ = ["CHECKS", "main"]

_DEVICE = "cuda"  # `--device cpu`: the dry run

_POPULATION = (
    "population=[{arch: [mlp], arch_kwargs: [{depth: 1, width: 16}], task: [mnist1d], "
    "optimizer: [adam], lr: [0.003], epochs: [3], seed: [0, 1, 2, 3]}]"
)


def _tiny(**kwargs):
    from weightcast.zoo.train import TrainConfig

    settings = {"epochs": 3, **kwargs}
    return TrainConfig(task="mnist1d", arch="mlp", arch_kwargs={"depth": 1, "width": 32}, batch_size=256,
                       device=_DEVICE, **settings)  # fmt: skip


def check_train(work: Path) -> str:
    import math

    from weightcast.zoo.train import train

    result = train(_tiny())
    device = next(result.model.parameters()).device
    metric = result.history.records[-1].val_metric
    assert device.type == _DEVICE, f"model on {device}"
    assert math.isfinite(metric), f"val metric {metric}"
    return f"3 epochs of an MLP on mnist1d on {device}: val accuracy {metric:.3f}"


def check_population(work: Path) -> str:
    import math

    try:
        from weightcast.zoo.population import train_population
    except ImportError:
        return "SKIP: weightcast.zoo.population is not installed"
    results = train_population([_tiny(seed=seed) for seed in range(4)])
    metrics = [r.history.records[-1].val_metric for r in results]
    assert len(results) == 4 and all(math.isfinite(m) for m in metrics), metrics
    return f"4 members batched on {_DEVICE}: val accuracy {', '.join(f'{m:.3f}' for m in metrics)}"


def check_nowcaster(work: Path) -> str:
    from weightcast.eval.runtime import NowcastConfig, NowcastHook
    from weightcast.zoo.train import train

    hook = NowcastHook("shipped:wnn", NowcastConfig(), probe_size=256)
    result = train(_tiny(epochs=8), hooks=[hook])
    stats = hook.stats
    assert stats.attempted >= 1, f"no jump attempted: {stats}"
    device = next(result.model.parameters()).device
    assert device.type == _DEVICE, f"model on {device}"
    return (
        f"shipped WNN on a {_DEVICE} run: {stats.attempted} jumps attempted, {stats.accepted} accepted, "
        f"final val accuracy {result.history.records[-1].val_metric:.3f}"
    )


def check_ray(work: Path) -> str:
    from weightcast.collect import Collection, load_collect_config, run_collection
    from weightcast.configs import config_path

    try:
        import ray
    except ImportError:
        return "SKIP: Ray is not installed (pip install 'weightcast[ray]')"
    gpus = 0.5 if _DEVICE == "cuda" else 0
    ray.init(num_gpus=1 if gpus else 0, num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = load_collect_config(config_path("collect", "debug"), [
            "name=gpu-check", f"out_dir={work / 'collection'}", _POPULATION, f"device={_DEVICE}",
            "engine.name=ray", f"engine.num_gpus={gpus}", "engine.num_cpus=1", "engine.workers=2",
            "engine.schedule_timeout_s=120",
        ])  # fmt: skip
        result = run_collection(config, progress=False, echo=lambda line: None)
    finally:
        ray.shutdown()
    runs = Collection(work / "collection").runs()
    assert result.index is not None and result.index["complete"], "the collection is not complete"
    devices = {r["device"] for r in runs}
    assert all(d.startswith(_DEVICE) for d in devices), devices
    writers = {p.name.split("-")[1] for p in (work / "collection").rglob("*.tar")}
    where = ", ".join(sorted(devices))
    return f"{len(runs)} runs by {len(writers)} Ray workers at num_gpus={gpus} on {where}"


def check_ddp(work: Path) -> str:
    collection = work / "collection"
    if not (collection / "collection.json").is_file():  # the Ray check did not make it: collect locally
        from weightcast.collect import load_collect_config, run_collection
        from weightcast.configs import config_path

        config = load_collect_config(config_path("collect", "debug"), [
            "name=gpu-check", f"out_dir={collection}", _POPULATION, f"device={_DEVICE}", "engine.workers=1",
        ])  # fmt: skip
        run_collection(config, progress=False, echo=lambda line: None)
    out = work / "bundles"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone",
        "-m", "weightcast.gpu_check", "--device", _DEVICE, "--ddp-worker", str(collection), str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"torchrun exit {done.returncode}:\n{output}"
    kinds = sorted(p.name for p in out.iterdir() if (p / "model.safetensors").is_file())
    assert kinds, f"no bundle in {out}"
    backend = next((line for line in done.stdout.splitlines() if line.startswith("backend:")), "backend: ?")
    return f"train-predictor under torchrun, {backend}, DistributedDataParallel: bundles {', '.join(kinds)}"


def _ddp_worker(collection: str, out: str) -> int:
    """Inside torchrun: the process group (NCCL; gloo in the CPU dry run), then train-predictor's
    debug config on the device; fit.py wraps the loss in DistributedDataParallel."""
    import torch
    import torch.distributed as dist

    from weightcast.configs import config_path
    from weightcast.train_predictor.config import load_train_predictor_config
    from weightcast.train_predictor.train import train_predictors

    if _DEVICE == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if _DEVICE == "cuda" else "gloo")
    try:
        print(f"backend: {dist.get_backend()}")
        config = load_train_predictor_config(config_path("train_predictor", "debug"), [
            f"collection={collection}", f"out_dir={out}", f"device={_DEVICE}", "steps=20", "eval_every=10",
            "checkpoint_every=20", "val_fraction=0.5", "progress=false",
        ])  # fmt: skip
        train_predictors(config, echo=lambda line: None)
    finally:
        dist.destroy_process_group()
    return 0


CHECKS: dict[str, Callable[[Path], str]] = {
    "train-cuda": check_train,
    "population-cuda": check_population,
    "nowcaster-cuda": check_nowcaster,
    "ray-gpu-fraction": check_ray,
    "ddp-nccl": check_ddp,
}


def main(argv: list[str] | None = None) -> int:
    global _DEVICE
    parser = argparse.ArgumentParser(prog="python -m weightcast.gpu_check", description="GPU paths once each")
    parser.add_argument("--keep", metavar="DIR", help="keep the collection and bundles in DIR")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: dry run, no GPU")
    parser.add_argument("--only", nargs="*", choices=list(CHECKS), help="run these checks only")
    parser.add_argument("--ddp-worker", nargs=2, metavar=("COLLECTION", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _DEVICE = args.device
    if args.ddp_worker:
        return _ddp_worker(*args.ddp_worker)

    import torch

    names = args.only or list(CHECKS)
    if _DEVICE == "cuda" and not torch.cuda.is_available():
        for name in names:
            print(f"SKIP  {name:<17} no CUDA here (torch.cuda.is_available() is False)")
        print("gpu_check: no GPU, every check skipped; run it on a machine with a GPU")
        return 0
    where = torch.cuda.get_device_name(0) if _DEVICE == "cuda" else "the CPU (dry run: no GPU path checked)"
    print(f"gpu_check on {where} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            start = time.perf_counter()
            try:
                message = CHECKS[name](work)
                status = "SKIP" if message.startswith("SKIP") else "PASS"
            except Exception as err:  # every check runs; the report says which failed and why
                status, message = "FAIL", f"{type(err).__name__}: {err}"
                failed.append(name)
                traceback.print_exc(file=sys.stderr)
            print(f"{status}  {name:<17} {time.perf_counter() - start:6.1f} s  {message}", flush=True)
    failures = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"gpu_check: {len(names) - len(failed)} of {len(names)} checks did not fail{failures}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
