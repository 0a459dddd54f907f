"""Benchmark of the zoo: parameter count and seconds per training epoch of every architecture,
on MNIST-1D where the architecture takes 1-D signals, else on its default task.

    python -m weightcast.zoo.benchmark [--epochs 2] [--device cpu] [--json out.json]
"""

import argparse
import json
import platform
import statistics

import torch

from weightcast.zoo.models import ARCHITECTURES, count_parameters, is_compatible
from weightcast.zoo.tasks import get_task
from weightcast.zoo.train import TrainConfig, build_model, train

__all__ = ["benchmark_architecture", "main"]


def benchmark_architecture(arch: str, epochs: int = 2, device: str = "cpu") -> dict:
    """Train `arch` for `epochs` epochs (batch 128, Adam) and time each epoch (evaluation included)."""
    task_name = "mnist1d" if is_compatible(arch, get_task("mnist1d").spec) else ARCHITECTURES.metadata(arch)["default_task"]
    config = TrainConfig(arch=arch, task=task_name, epochs=epochs, device=device)
    task = get_task(task_name)
    history = train(config, task=task).history
    times = history.column("wall_time")
    per_epoch = [b - a for a, b in zip(times, times[1:])]
    return {
        "arch": arch,
        "task": task_name,
        "parameters": count_parameters(build_model(config, task)),
        "train_examples": len(task.x_train),
        "seconds_per_epoch": statistics.median(per_epoch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", nargs="*", default=None, help="architectures (default: all)")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    print(f"# zoo benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, device {args.device}, batch 128, Adam")
    print(f"| architecture | task | parameters | train examples | seconds / epoch |\n|---|---|---:|---:|---:|")
    rows = []
    for arch in args.arch or ARCHITECTURES.names():
        row = benchmark_architecture(arch, args.epochs, args.device)
        rows.append(row)
        print(f"| {arch} | {row['task']} | {row['parameters']:,} | {row['train_examples']:,} | {row['seconds_per_epoch']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
