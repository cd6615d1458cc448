"""``python -m effbench.config FILE...``: check config files with the strict loader (duplicate
keys, YAML syntax errors with file, line and column)."""

import sys

from .yaml_strict import main

sys.exit(main(sys.argv[1:]))
