"""`weightcast train-predictor` (train_predictor stage's command): fit per-layer-type predictors on a
collection and export one bundle per kind; `python -m weightcast.train_predictor` runs the same command, also
under torchrun for data-parallel fits.

    weightcast train-predictor --config configs/train_predictor/debug.yaml [key.sub=value ...]
    python -m torch.distributed.run --nproc_per_node=2 -m train_predictor --config ... device=cpu
"""

from __future__ import annotations

import argparse
import shlex

from weightcast.cli import config_command
from weightcast.train_predictor.config import load_train_predictor_config
from weightcast.train_predictor.train import train_predictors

__all__ = ["COMMAND"]


def _train_predictor(args: argparse.Namespace) -> int:
    config = load_train_predictor_config(args.config, args.overrides)
    config_words = ["--config", args.config] if args.config else []
    words = ["weightcast", "train-predictor", *config_words, *args.overrides]
    train_predictors(config, command=shlex.join(words))
    return 0


COMMAND = config_command(
    "train-predictor", "train_predictor",
    "fit per-layer-type weight predictors (WNN, LFD-2, ...) on a collection and export one bundle per kind",
    _train_predictor,
)
