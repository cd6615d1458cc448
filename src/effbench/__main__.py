"""`python -m effbench ...` is `effbench ...` (see effbench.cli)."""

import sys

from effbench.cli import main

sys.exit(main())
