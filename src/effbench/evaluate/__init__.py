"""Accuracy with lm-evaluation-harness: the pipeline's offline tasks and the paper's benchmarks."""
