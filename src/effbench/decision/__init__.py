"""From measurements to a decision (issue 10, parts 2-4): exact Pareto fronts over several
objectives, per axis and across axes (:mod:`.pareto`); scaling fits against model size with their
uncertainty and where two techniques cross (:mod:`.scaling`); and ``effbench recommend``, which
walks the paper's path (architecture, then fine-tuning method, then precision) from the measured
records under a user's constraints (:mod:`.recommend`, :mod:`.recommend_cli`).

Everything here reads the same per-cell frames as the aggregation (:mod:`.frames` calls
:mod:`effbench.aggregate`), never the paper's numbers. :mod:`.build` writes ``results/decision/``
for the pipeline (workflow/rules/decision.smk). Methods and limits: docs/decision.md.
"""
