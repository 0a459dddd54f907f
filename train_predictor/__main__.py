"""`python -m train_predictor` = `weightcast train-predictor` (also the torchrun entry point)."""

import sys

from zoo.cli import run_command

from train_predictor.cli import COMMAND

sys.exit(run_command(COMMAND))
