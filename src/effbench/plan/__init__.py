"""Memory planning: predict peak GPU memory of a cell before any job is submitted.

Pure Python (no torch), so the driver can call it during config validation and dry runs.
One module per idea: `params` (exact parameter counts from a model-settings dict),
`memory` (bytes of model states and activations per GPU), `fit` (a verdict per cell and
the setting that would make it fit); for fine-tuning `ft_shape` (a Hugging Face model's
shape and what each method trains) and `finetune` (bytes per GPU and on the host under
DDP / ZeRO / offload, `finetune_memory_verdicts(config)`). Formulas and their validation:
docs/memory-planner.md.
"""
