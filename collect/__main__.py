"""`python -m collect` = `weightcast collect`."""

import sys

from zoo.cli import run_command

from collect.cli import COMMAND

sys.exit(run_command(COMMAND))
