"""``effbench preflight``: check a config's whole campaign before any job is submitted.

One module per check, each returning :class:`rows.Row` values (one per cell or reference):

- ``environments``: each stage's interpreter imports what its cells need, at the versions its
  environment files pin, and every lm-eval task instantiates offline up to its dataset;
- ``references``: models, tokenizers and datasets resolve in the local Hugging Face cache or on
  disk with the files the stage reads;
- ``memory``: predicted GPU memory per cell against ``cluster.gpu_memory_gb`` (pretraining:
  the planner; fine-tuning: ``effbench.plan.finetune`` when present; serving: weights + KV);
- ``runtime``: predicted run time per cell against the Slurm profile's ``runtime``;
- ``disk``: free space under ``results:`` against the predicted checkpoints.

``probe`` is the part that runs inside a stage's interpreter (stdlib at import time);
``run`` puts the checks together; ``cli`` is the command. Docs: docs/preflight.md.
Kept light: importing this package imports no stage library.
"""
