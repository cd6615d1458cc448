"""Shell injection (issue 9, item 1): no config value reaches a shell unquoted.

The whole DAG's shell commands come from `snakemake -n -p` on a config whose results path,
stage interpreters, model and data paths and free-text settings hold shell metacharacters
(the schema restricts names to ^[a-z0-9][a-z0-9_.-]*$, so names cannot). Each printed command
is then run by bash with every stage interpreter a harmless script that records its arguments:
the sentinel file that any of the payloads would create must never appear, and every
command must get the hostile results path as one argument, unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from workflow_helpers import SNAKEMAKE, minimal_config, snakemake

HARMLESS = '#!/bin/sh\nprintf \'%s\\0\' "$@" > "$(mktemp "$EFFBENCH_CALLS/call.XXXXXX")"\n'


def hostile(sentinel: Path) -> str:
    """Text that runs `touch sentinel` wherever a shell reads it unquoted (no braces: those are
    Snakemake wildcards, refused in results by the schema; no newline: one command per line)."""
    return f"x $(touch {sentinel}) `touch {sentinel}`;touch {sentinel} & 'q' \"dq\" | * ?"


def shell_commands(dry_run: str) -> list[tuple[str, str, list[str]]]:
    """(rule, command, the job's output and log paths) of every job `snakemake -n -p` listed
    (an empty command for a job that printed none)."""
    jobs: list[tuple[str, str, list[str]]] = []
    for line in dry_run.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            jobs.append((m.group(1), "", []))
        m = re.match(r"^\s+(output|log): (.*)$", line)
        if m and jobs:
            jobs[-1][2].extend(m.group(2).split(", "))
        if line.startswith("Shell command: ") and jobs:
            jobs[-1] = (jobs[-1][0], line[len("Shell command: "):], jobs[-1][2])
    return jobs


def run_in_bash(command: str, calls: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "EFFBENCH_CALLS": str(calls)})


def _driver_python() -> str:
    """The interpreter Snakemake runs under (DRIVER_PYTHON, for the aggregation steps)."""
    return SNAKEMAKE.read_text().splitlines()[0].removeprefix("#!").strip()


def test_an_unquoted_value_would_be_caught(tmp_path):
    """Self-check: the old `{DATA_PRETRAIN}/tokenizer` form runs the payload."""
    sentinel, calls = tmp_path / "PWNED", tmp_path / "calls"
    calls.mkdir()
    results = tmp_path / hostile(sentinel)
    run_in_bash(f"true --tokenizer-dir {results}/data/pretrain/tokenizer", calls)
    assert sentinel.exists()
    sentinel.unlink()
    run_in_bash(f"true --tokenizer-dir {shlex.quote(str(results))}/data/pretrain/tokenizer", calls)
    assert not sentinel.exists()


# rtn: the minimal config's method; gptq (the default's) and awq calibrate on the pipeline's own
# corpus, so only they print the quantize job's `--data-dir` (quantize_data_arg, a fragment built
# in common.smk and quoted there).
@pytest.mark.parametrize("int4_method", ["rtn", "gptq", "awq"])
def test_no_config_value_reaches_a_shell_unquoted(tmp_path, int4_method):
    sentinel, calls = tmp_path / "PWNED", tmp_path / "calls"
    calls.mkdir()
    evil = hostile(sentinel)
    stage = tmp_path / f"bin {evil}" / "stage.sh"  # the interpreters' own path is a config value too
    stage.parent.mkdir(parents=True)
    stage.write_text(HARMLESS)
    stage.chmod(stage.stat().st_mode | stat.S_IXUSR)

    results = tmp_path / f"results {evil}"
    c = minimal_config(results)
    c["environments"] = {s: str(stage) for s in ("driver", "pretrain", "finetune", "quantize", "inference")}
    ft = c["finetune"]
    ft["methods"]["lora"]["lora_target"] = evil
    ft["models"]["local-ft"] = {"path": str(tmp_path / f"model {evil}"), "template": "default"}
    ft["tasks"]["local-task"] = {"source": "local", "path": str(tmp_path / f"task {evil}.jsonl"),
                                 "columns": {"prompt": evil, "response": evil}}
    ft["grid"].append({"models": ["local-ft"], "methods": ["lora"], "tasks": ["local-task"]})
    c["quantize"]["models"]["local-q"] = {"path": str(tmp_path / f"served {evil}")}
    c["quantize"]["int4"]["ignore"] = ["lm_head", evil]
    c["quantize"]["int4"]["method"] = int4_method
    c["eval"]["metrics"] = {"effbench_mc_fact": evil}

    dry = snakemake(tmp_path, c, "-n", "-p")
    assert not sentinel.exists(), "the dry run itself ran a payload"
    jobs = shell_commands(dry.stdout)
    jobs = [j for j in jobs if j[0] != "all"]
    assert all(command for _, command, _ in jobs), f"a job printed no command: {jobs}"
    assert {rule for rule, _, _ in jobs} == {"pretrain_data", "pretrain", "export_hf", "finetune_data", "finetune", "quantize", "eval_tasks",
                     "evaluate", "fidelity", "inference", "aggregate_pretrain", "aggregate_finetune", "aggregate_quantize",
                     "aggregate_inference", "summary", "decision", "report"}

    driver = shlex.quote(_driver_python())
    quantize_args: dict[str, list[str]] = {}  # precision -> the quantize job's arguments, per model
    for rule, command, paths in jobs:
        command = command.replace(driver, shlex.quote(str(stage)))  # DRIVER_PYTHON is Snakemake's own
        assert shlex.quote(str(stage)) in command, f"a command runs something other than a stage interpreter:\n{command}"
        for p in paths:  # Snakemake makes these before a job runs; without them bash skips the command
            Path(p).parent.mkdir(parents=True, exist_ok=True)
        before = set(calls.iterdir())
        run = run_in_bash(command, calls)
        assert not sentinel.exists(), f"this command ran a payload:\n{command}"
        assert run.returncode == 0, f"{command}\n{run.stderr}"
        (new,) = set(calls.iterdir()) - before
        args = new.read_bytes().decode().split("\0")
        assert any(a.startswith(str(results)) for a in args), f"the results path was split or changed:\n{args}"
        if rule == "quantize":
            precision = Path(next(p for p in paths if p.endswith("record.parquet"))).parent.name
            quantize_args.setdefault(precision, []).append(args)

    # The calibrated path: each int4 job gets the corpus folder as one argument, unchanged.
    assert set(quantize_args) == {"bf16", "int4"} and len(quantize_args["int4"]) == 2  # xs-mqa and local-q
    corpus = str(results / "data" / "pretrain")
    for precision, runs in quantize_args.items():
        for args in runs:
            calibrated = precision == "int4" and int4_method != "rtn"
            if calibrated:
                assert args.count("--data-dir") == 1 and args[args.index("--data-dir") + 1] == corpus, args
            else:
                assert "--data-dir" not in args, args
