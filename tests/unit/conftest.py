"""Every unit test registers its measured jobs in a registry of its own: another checkout's
tests (or pipeline) on the same host then neither count as overlapping jobs here, nor see
these (effbench.isolation reads $EFFBENCH_JOB_REGISTRY; child processes inherit it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_job_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFBENCH_JOB_REGISTRY", str(tmp_path / "job-registry"))


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib figure saved during the test, in order, once each (PNG and SVG save it
    twice): the plot tests read the drawn points back from them."""
    from matplotlib.figure import Figure

    figures: list = []
    real = Figure.savefig

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not any(f is self for f in figures):
            figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return figures
