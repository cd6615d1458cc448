"""torchrun that dies with its job's shell: ``python -m effbench.torchrun`` takes torchrun's
arguments. Its workers die with it (each stage script arms ``die_with_parent`` too), so a
killed job leaves no rank running to write a record after the job failed."""

from __future__ import annotations

from torch.distributed.run import main

from .lifetime import die_with_parent

if __name__ == "__main__":
    die_with_parent()
    main()
