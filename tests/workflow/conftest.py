"""One local run of the real pipeline on the minimal config, shared by the workflow tests
(session scope: the Slurm test compares its records with this run's)."""

from __future__ import annotations

import pytest
from workflow_helpers import minimal_config, snakemake


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    config = minimal_config(work / "results")
    run = snakemake(work, config)
    return work, config, run
