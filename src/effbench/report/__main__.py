"""`python -m effbench.report ...` (see effbench.report.cli)."""

import sys

from effbench.report.cli import main

sys.exit(main())
