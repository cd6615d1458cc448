"""Isolation in the fast tier: every measured job holds the whole host (dry runs, no job runs).

A measured job is one whose record has timed figures: the stages of `effbench.record.STAGES`
(pretrain, finetune, quantize, inference), each a rule of the same name. Locally, only the
`host_share` resource keeps such a job from running beside another (workflow/rules/common.smk):
it must ask for every unit the run provides, and every other job for at least one unit (so it
cannot start beside a measured one) and at most half (so light jobs still pair up). Only the
full pipeline's overlap test (test_pipeline.py::test_no_two_timed_runs_overlapped, minutes)
saw a measured rule given a light job's share; these dry runs see it in seconds.
"""

from __future__ import annotations

from collections import Counter

from effbench.record import STAGES
from workflow_helpers import ROOT, dag_resources, minimal_config, planned_resources, snakemake

MEASURED = frozenset(STAGES)
# Rules of a measured stage beside the one named after it (the open-loop points' own engine load).
MEASURED_RULES = MEASURED | {"inference_open_loop"}


def check_isolation(total: dict, jobs: list[tuple[str, dict, dict]]) -> None:
    whole = total.get("host_share")
    assert isinstance(whole, int) and whole >= 2, f"the run provides no divisible host_share: {total}"
    assert MEASURED <= {rule for rule, _, _ in jobs}, "a measured stage is not planned: the check would be vacuous"
    for rule, wildcards, res in jobs:
        if rule == "all":  # the target rule runs nothing
            continue
        share = res.get("host_share")
        if rule in MEASURED_RULES:
            assert share == whole, f"measured job {rule}{wildcards} holds host_share={share} of {whole}: not alone"
        else:
            assert isinstance(share, int) and share >= 1, \
                f"light job {rule}{wildcards} holds no host_share: it may run beside a measured job"
            assert 2 * share <= whole, \
                f"light job {rule}{wildcards} holds host_share={share} of {whole}: light jobs no longer pair up"


def test_embedded_default_measured_jobs_hold_the_whole_host(tmp_path):
    total, jobs = dag_resources(tmp_path / "work")  # no --configfile: the README's run
    check_isolation(total, jobs)
    counts = Counter(rule for rule, _, _ in jobs)
    assert counts["pretrain"] == 5 and counts["finetune"] == 7  # the default's grid, as the README says


def test_minimal_config_measured_jobs_hold_the_whole_host_as_the_command_line_prints(tmp_path):
    """The minimal config (the workflow tests' own), and what `snakemake -n` prints for it with
    the workstation profile a run from the repository root picks up: the same shares as the API's
    view (no profile hands out others)."""
    config = minimal_config(tmp_path / "results")
    total, jobs = dag_resources(tmp_path / "api", config)
    check_isolation(total, jobs)
    want = Counter((rule, res.get("host_share")) for rule, _, res in jobs if rule != "all")
    work = tmp_path / "cli"
    work.mkdir()
    out = snakemake(work, config, "-n", "--workflow-profile", str(ROOT / "profiles" / "default")).stdout
    got = Counter((rule, int(res["host_share"]) if "host_share" in res else None)
                  for rule, _, res in planned_resources(out) if rule != "all")
    assert got == want
