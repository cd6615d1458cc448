"""`effbench preflight` on config/paper.yaml, with the real stage environments of this checkout.

Here nothing of the paper's is on disk: preflight must name every missing model and dataset
by its config key. Then the same references are faked as present (a temporary Hugging Face
cache in the hub's layout, the corpus and tokenizer paths pointed at temporary folders, nltk's
tokenizer data) and it must report nothing else: the environments import what the cells need,
every lm-eval task builds offline, and memory and run time fit. The only problem allowed then is
the fine-tuning memory planner's absence, until `effbench.plan.finetune` exists (issue #14,
part 3). `results:` is put on a large empty tmpfs (root only; elsewhere the disk check is left
out, saying so), so that this machine's free disk does not decide the outcome.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fake_hub import add_dataset, add_model  # noqa: E402

from effbench.preflight import cli  # noqa: E402
from effbench.preflight.profile import load_profile  # noqa: E402
from effbench.preflight.run import CHECKS, Options, preflight  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
STAGES = ("pretrain", "finetune", "quantize", "inference")

pytestmark = [
    pytest.mark.skipif(any(not (ROOT / ".venvs" / s / "bin" / "python").exists() for s in STAGES),
                       reason="needs the four stage environments (bash scripts/setup.sh)"),
    pytest.mark.slow,  # probes every stage environment's imports: ~1 min of CPU
]


@contextmanager
def big_results(where: Path) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """`results:` on a 4 TB tmpfs (size is a limit, not memory), or the checks without disk."""
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4t", "tmpfs", str(where)], capture_output=True)
    if done.returncode:
        yield where, tuple(c for c in CHECKS if c != "disk")
        return
    try:
        yield where, CHECKS
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _env(monkeypatch: pytest.MonkeyPatch, tmp: Path) -> Path:
    """An empty Hugging Face home and nltk data folder of the test's own; returns the hub cache."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp / "hf"))
    monkeypatch.setenv("NLTK_DATA", str(tmp / "nltk"))
    (tmp / "hf" / "hub").mkdir(parents=True)
    (tmp / "nltk").mkdir()
    return tmp / "hf" / "hub"


def _keys_expected(config: dict) -> set[str]:
    """The config keys of every model and dataset reference the paper names."""
    keys = {f"finetune.models.{m}" for m in config["finetune"]["models"]}
    keys |= {f"finetune.tasks.{t}" for t in config["finetune"]["tasks"]}
    keys |= {f"quantize.models.{m}" for m in config["quantize"]["models"]}
    keys |= {"data.pretrain.shards.path", "data.pretrain.shards.tokenizer", "eval.tasks"}
    return keys


def _fake_present(config: dict, tmp: Path, hub: Path, eval_repos: list[str]) -> dict:
    """Every reference of the paper made present; returns the config pointed at the local paths."""
    models = list(config["finetune"]["models"].values()) + list(config["quantize"]["models"].values())
    for repo in sorted({m["hf"] for m in models}):  # Qwen2.5-7B and -14B are in both grids
        add_model(hub, repo)
    for t in config["finetune"]["tasks"].values():
        add_dataset(hub, t["hf_id"])
    for repo in eval_repos:
        add_dataset(hub, repo)
    punkt = tmp / "nltk" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    (punkt / "sentence_starters.txt").write_text("however\n")
    shards, tok = tmp / "shards", tmp / "tokenizer"
    shards.mkdir()
    (shards / "shard-00000.jsonl").write_text('{"text": "a line of text"}\n')
    tok.mkdir()
    (tok / "tokenizer_config.json").write_text("{}")
    (tok / "tokenizer.json").write_text("{}")
    faked = copy.deepcopy(config)
    faked["data"]["pretrain"]["shards"].update(path=str(shards), tokenizer=str(tok))
    return faked


def test_paper_preflight_names_missing_references_by_key_and_nothing_else_once_present(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    hub = _env(monkeypatch, tmp_path)
    with big_results(tmp_path / "results") as (results, checks):
        config = copy.deepcopy(PAPER)
        config["results"] = str(results)
        opts = Options(load_profile(ROOT / "profiles" / "slurm"), checks=checks)

        rows = preflight(config, opts)
        problems = [r for r in rows if r.problem]
        fixes = "\n".join(r.fix for r in problems)
        missing_keys = {k for k in _keys_expected(config) if f"`{k}" not in fixes}
        assert not missing_keys, f"not reported by key: {sorted(missing_keys)}\n{fixes}"
        allowed = tuple(f"`{k}" for k in _keys_expected(config)) + ("NLTK_DATA",)
        other = [r for r in problems if not any(a in r.fix for a in allowed)]
        assert not other, "problems other than missing references:\n" + "\n".join(
            f"{r.check} {r.cell}: {r.detail} (fix: {r.fix})" for r in other)
        eval_repos = sorted(r.cell.split(" ", 2)[2] for r in problems if r.cell.startswith("eval dataset "))
        assert len(eval_repos) >= len(config["eval"]["tasks"]) - 1, eval_repos  # bbh, gpqa, ifeval, math, mmlu_pro, musr

        faked = _fake_present(config, tmp_path, hub, eval_repos)
        path = tmp_path / "paper-faked.yaml"
        path.write_text(yaml.safe_dump(faked))
        capsys.readouterr()
        rc = cli.main(["--configfile", str(path), "--checks", ",".join(checks)])
        out = capsys.readouterr().out
    problem_lines = [line for line in out.splitlines() if line.startswith("- [")]
    assert rc == 0 and not problem_lines, out
    fields = [line.split()[:4] for line in out.splitlines()]
    assert ["memory", "serve", "yi-34b/bf16", "ok"] in fields  # the checks ran on the faked shapes
    assert ["runtime", "finetune", "mistral-small-24b/openo1/full", "ok"] in fields
