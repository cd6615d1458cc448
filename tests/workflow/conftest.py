"""One local run of the real pipeline on the minimal config, shared by the workflow tests
(session scope: the Slurm test compares its records with this run's, the relocation tests copy
and move it, the browser test opens its report).

A test that needs a run of stage jobs, through one of the fixtures below or by its own
``pytest.mark.slow``, is in the slow tier; ``scripts/test.sh --fast`` leaves it out."""

from __future__ import annotations

import pytest
from workflow_helpers import minimal_config, snakemake

# Fixtures that run stage jobs: a test using any of them (directly or through another fixture)
# is slow.
RUNS_STAGE_JOBS = {"pipeline", "finished", "slurm_run", "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RUNS_STAGE_JOBS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    config = minimal_config(work / "results")
    run = snakemake(work, config)
    return work, config, run
