"""`python -m weightcast.collect` = `weightcast collect`."""

import sys

from weightcast.cli import run_command

from weightcast.collect.cli import COMMAND

sys.exit(run_command(COMMAND))
