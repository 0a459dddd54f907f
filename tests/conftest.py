"""Shared test settings: one intra-op thread (the test models are tiny; competing thread pools on a
2-core machine only slow them down), no wandb network, a non-interactive matplotlib backend."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
