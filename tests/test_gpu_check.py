"""`python -m weightcast.gpu_check`: without CUDA every check is reported skipped and the exit code
is 0 (this machine has no GPU, so the GPU paths themselves are not run here); `--device cpu` runs
the checks' own code (the training loop, the batched trainer, the nowcaster, train-predictor
under torchrun with DistributedDataParallel on gloo) as a dry run of the script."""

import subprocess
import sys

import pytest
import torch

from weightcast.gpu_check import CHECKS, main


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")
def test_without_cuda_every_check_is_skipped(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("SKIP")] == list(CHECKS)
    assert "no GPU, every check skipped" in out
    done = subprocess.run([sys.executable, "-m", "weightcast.gpu_check"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("SKIP") == len(CHECKS)


@pytest.mark.slow
def test_cpu_dry_run_of_the_checks(tmp_path, capsys):
    names = ["train-cuda", "population-cuda", "nowcaster-cuda", "ddp-nccl"]  # ddp-nccl collects locally
    assert main(["--device", "cpu", "--keep", str(tmp_path), "--only", *names]) == 0
    out = capsys.readouterr().out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("PASS")] == names
    assert "backend: gloo" in out and "bundles lfd2, wnn" in out
