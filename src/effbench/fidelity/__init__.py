"""Fidelity of a served precision to its baseline, independent of task accuracy: held-out
perplexity, KL divergence of next-token distributions and top-1 agreement, on the pretraining
corpus' validation split, through the engine that serves (docs/fidelity.md).

- :mod:`.measures`: the figures from per-position log-distributions (numpy only).
- :mod:`.extract`: held-out windows and the engines' per-position log-distributions
  (vLLM prompt logprobs over the whole vocabulary; transformers as the fallback).
- :mod:`.job`: what a fidelity job compares (the rule's settings).
- :mod:`.table`: the fidelity table joined into the quantize and inference tables' pages.
"""
