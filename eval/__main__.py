"""`python -m eval` = `weightcast eval` (`python -m eval.quickstart` = `weightcast quickstart`)."""

import sys

from zoo.cli import run_command

from eval.cli import COMMAND

sys.exit(run_command(COMMAND))
