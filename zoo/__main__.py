"""`python -m weightcast.zoo` = `weightcast zoo`."""

import sys

from weightcast.cli import run_command
from weightcast.zoo.commands import COMMAND

sys.exit(run_command(COMMAND))
