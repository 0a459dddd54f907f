"""Nowcast throughput of the `train_predictor` stage's predictors: parameters per second of WNN and
LFD-2 `predict` on models of 1e5 to 1e8 parameters, against this machine's float32 matmul
throughput (WNN is compute-bound) and memory bandwidth (LFD-2 is memory-bound), both measured by
this script, with the peak extra memory of a call.

    python -m weightcast.train_predictor.benchmark [--sizes 1e5 1e6 1e7 1e8] [--device cpu] [--repeats 3]
                                        [--threads N] [--quick]

Windows are laid out as the live-training ring buffer holds them: one (input_length, N) tensor of
random walks, passed as its transposed (N, input_length) view. Columns of the table:
- seconds: best of `repeats` calls of `predict(window, out=buffer)` into a reused output, as a
  nowcaster that keeps its buffer; "new output" the same with a freshly allocated output (on a
  CPU the first touch of N new floats page-faults, a cost of its own).
- achieved: WNN in GFLOP/s, counting the model's nominal FLOPs (2 x in x out of every Linear,
  17,664 per scalar at input length 5; the fused kernel executes ~20.5k, zero blocks of a
  block-diagonal matmul included); LFD-2 in GB/s,
  counting the bytes it must move (its 2 input columns read, the output written: 12 per scalar).
- of peak: that over the measured matmul FLOP/s (best of several square `torch.mm`) or memory
  bandwidth (best of several `torch.add(a, b, out=c)` on tensors larger than the caches, read +
  write bytes). LFD-2 can exceed 100% at sizes whose columns fit in the last-level cache.
- peak extra: the peak memory of a new-output call beyond what existed before it (process RSS
  high-water mark on a CPU, `torch.cuda.max_memory_allocated` on CUDA), over the N parameters'
  float32 bytes; the output alone is 1.0.
Predictions use torch's intra-op threads: on a machine whose cores are busy with other processes,
each of WNN's many small ops waits for a descheduled thread, so measure on a quiet machine (or
compare per core with `--threads 1`).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import platform
import time
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from weightcast.train_predictor.predictors import LFD2, WNN, Predictor

__all__ = [
    "measure_matmul",
    "measure_bandwidth",
    "nominal_flops",
    "moved_bytes",
    "benchmark_predictor",
    "main",
]

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000, 100_000_000)
QUICK_SIZES = (10_000,)
# The WNN paper's figure (VGG19 on a TITAN Xp), for comparison.
PAPER = "WNN paper: 143.7M parameters in 10.6 s on a TITAN Xp = 13.6M parameters/s"


def measure_matmul(device: torch.device, n: int, repeats: int) -> float:
    """Best float32 FLOP/s of an (n, n) @ (n, n) `torch.mm` over `repeats` timed calls."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)  # warm-up: thread pools, BLAS dispatch
    return 2 * n**3 / _best_time(lambda: torch.mm(a, b, out=out), device, repeats)


def measure_bandwidth(device: torch.device, numel: int, repeats: int) -> float:
    """Best memory bandwidth in bytes/s of `torch.add(a, b, out=c)` on `numel` float32 values,
    counting 12 bytes per value (two read, one written)."""
    a, b = (torch.rand(numel, device=device) for _ in range(2))
    out = torch.empty(numel, device=device)
    torch.add(a, b, out=out)  # warm-up: the first write page-faults `out`
    return 12 * numel / _best_time(lambda: torch.add(a, b, out=out), device, repeats)


def nominal_flops(predictor: Predictor) -> int:
    """FLOPs per scalar of the predictor's Linear layers as defined (2 x in x out each)."""
    return sum(2 * m.in_features * m.out_features for m in predictor.modules() if isinstance(m, nn.Linear))


def moved_bytes(predictor: LFD2, itemsize: int = 4) -> int:
    """Bytes per scalar a raw linear farcaster must move at one horizon: its columns read, the
    prediction written."""
    return (len(predictor.columns) + 1) * itemsize


def benchmark_predictor(predictor: Predictor, size: int, device: torch.device, repeats: int) -> dict:
    """Time `predictor.predict` on a (size, input_length) ring-buffer window: best seconds into a
    reused output and with a new one, and the peak extra bytes of a new-output call (None where
    this platform cannot measure it)."""
    predictor = predictor.to(device).eval()
    window = _random_walks(predictor.input_length, size, device).t()  # (size, L) view
    predictor.predict(window[: 2**20])  # warm-up: code paged in, BLAS buffers, thread pools
    fresh, peak = math.inf, 0
    for _ in range(repeats):
        seconds, extra = _peak_extra(lambda: predictor.predict(window), device)
        fresh = min(fresh, seconds)
        peak = None if peak is None or extra is None else max(peak, extra)
    out = torch.zeros(size, device=device)  # written once: no page faults left in the timing
    reused = _best_time(lambda: predictor.predict(window, out=out), device, repeats)
    return {"seconds": reused, "seconds_new_output": fresh, "peak_extra_bytes": peak}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", help="model sizes in parameters")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and references, one repeat")
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--repeats and --threads must be >= 1, got {args.repeats}, {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 1 if args.quick else args.repeats
    sizes = [int(s) for s in args.sizes] if args.sizes else list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if min(sizes) < 1:
        parser.error(f"--sizes must be >= 1, got {sizes}")
    cuda = device.type == "cuda"
    # References: matmul side, add length (large enough to leave the caches; 1.2 GB on a GPU)
    mm_size, add_numel = (256, 10**6) if args.quick else (8192, 10**8) if cuda else (2048, 5 * 10**7)
    flops = measure_matmul(device, mm_size, max(repeats, 3))
    bandwidth = measure_bandwidth(device, add_numel, max(repeats, 3))
    where = torch.cuda.get_device_name(device) if cuda else _cpu_name()
    print(f"# nowcast throughput: torch {torch.__version__}, {where}, {torch.get_num_threads()} CPU threads")
    print(f"# measured float32 matmul: {flops / 1e9:.1f} GFLOP/s; "
          f"memory bandwidth: {bandwidth / 1e9:.1f} GB/s")
    print(f"# {PAPER}")
    print("# windows: the ring buffer's (input_length, N) tensor, transposed; WNN work: its nominal "
          f"{nominal_flops(WNN()):,} FLOP per parameter; LFD-2 (input 21, horizon 180): 12 bytes moved")
    print("| parameters | predictor | seconds | parameters/s | achieved | of peak | seconds, new output "
          "| peak extra / parameter bytes |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    wnn, lfd2 = WNN(), LFD2()
    # (predictor, work per scalar, its unit per second, the measured peak of that unit)
    subjects = [(wnn, nominal_flops(wnn), "GFLOP/s", flops), (lfd2, moved_bytes(lfd2), "GB/s", bandwidth)]
    for size in sizes:
        for predictor, work, unit, peak in subjects:
            needed = 4 * size * (predictor.input_length + 3)  # window, two outputs, scratch margin
            available = _available_bytes(device)
            if available is not None and needed > available:
                print(f"| {size:,} | {predictor.kind} | skipped: needs ~{needed / 2**30:.1f} GiB, "
                      f"{available / 2**30:.1f} GiB available | | | | | |", flush=True)
                continue
            row = benchmark_predictor(predictor, size, device, repeats)
            achieved = work * size / row["seconds"]
            extra = row["peak_extra_bytes"]
            ratio = "n/a" if extra is None else f"{extra / (4 * size):.2f}"
            print(f"| {size:,} | {predictor.kind} | {row['seconds']:.4f} | {size / row['seconds']:.3g} "
                  f"| {achieved / 1e9:.1f} {unit} | {achieved / peak:.0%} | {row['seconds_new_output']:.4f} "
                  f"| {ratio} |", flush=True)


def _random_walks(length: int, size: int, device: torch.device) -> Tensor:
    """(length, size) float32 random walks, one column per scalar, built in place."""
    walks = torch.empty(length, size, device=device)
    walks[0].normal_()
    walks[1:].uniform_(-0.01, 0.01)
    return walks.cumsum_(0)


def _best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Fewest seconds of `repeats` calls of `fn`."""
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _peak_extra(fn: Callable[[], object], device: torch.device) -> tuple[float, int | None]:
    """(seconds, peak bytes allocated by `fn` beyond those held before it, or None)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _reset_rss_peak()
    start = time.perf_counter()
    result = fn()
    _sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = None if before is None else _status_kib("VmHWM") * 1024 - before
    del result
    return seconds, peak


def _reset_rss_peak() -> int | None:
    """Return freed heap memory to the OS, reset the RSS high-water mark to the current RSS
    (Linux: /proc/self/clear_refs) and return it in bytes; None where that is not possible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # else freed memory still counts as resident
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024
    except (OSError, AttributeError):
        return None


def _status_kib(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field} line")


def _available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (MemAvailable on a CPU), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} x {len(names)}"
    except (OSError, IndexError):
        return platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
