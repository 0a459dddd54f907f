"""`python -m weightcast.eval` = `weightcast eval` (`python -m weightcast.eval.quickstart` = `weightcast quickstart`)."""

import sys

from weightcast.cli import run_command

from weightcast.eval.cli import COMMAND

sys.exit(run_command(COMMAND))
