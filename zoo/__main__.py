"""`python -m zoo` = `weightcast zoo`."""

import sys

from zoo.cli import run_command
from zoo.commands import COMMAND

sys.exit(run_command(COMMAND))
