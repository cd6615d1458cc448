"""Every unit test registers its measured jobs in a registry of its own: another checkout's
tests (or pipeline) on the same host then neither count as overlapping jobs here, nor see
these (effbench.isolation reads $EFFBENCH_JOB_REGISTRY; child processes inherit it)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_job_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFBENCH_JOB_REGISTRY", str(tmp_path / "job-registry"))
