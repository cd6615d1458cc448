"""The inference stage: serve a model at a load point and measure it (vLLM or transformers)."""
