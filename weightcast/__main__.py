"""`python -m weightcast` = the `weightcast` console script."""

import sys

from weightcast.cli import main

sys.exit(main())
