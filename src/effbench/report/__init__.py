"""The run's report: one self-contained HTML page (``results/report.html``) with every table,
leaderboard and plot of every stage, each captioned (what is measured, the source of each figure,
its noise), the config and provenance of the run, and what failed, was skipped or is flagged.

- :mod:`.inputs` — collect: the stage manifests, the records they name, the config, the
  document sections other rules hand in (Markdown + plots, CSV, JSON);
- :mod:`.captions` — what each table, leaderboard and plot says about itself;
- :mod:`.markdown` — the Markdown our files use, as escaped HTML;
- :mod:`.embed` — images as data: URIs, links relative to the page;
- :mod:`.render` — the page;
- :mod:`.cli` — ``python -m effbench.report`` (the ``report`` rule).

See docs/report.md.
"""
