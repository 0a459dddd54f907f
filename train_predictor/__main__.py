"""`python -m weightcast.train_predictor` = `weightcast train-predictor` (also the torchrun entry point)."""

import sys

from weightcast.cli import run_command

from weightcast.train_predictor.cli import COMMAND

sys.exit(run_command(COMMAND))
