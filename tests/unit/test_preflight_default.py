"""`effbench preflight` on the embedded default (issue #23 item 7): it passes right after set-up.

The default says `device: auto`. Where NVML finds no GPU (this machine, and any set-up without
one) its jobs run on the CPU, so the GPU memory and run-time checks are skips with the reason,
not problems; where NVML finds one, they judge that GPU. A config without `cluster.gpu_memory_gb`
on a GPU campaign gets one problem per stage naming that key, never a Python module as the fix.
NVML is the boundary faked here (``device.local_gpu``); everything behind it runs for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from effbench.preflight import cli
from effbench.preflight import device as dev

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "config" / "config.yaml"


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "local_gpu", lambda: "NVML found no GPU (NVMLError_LibraryNotFound: not here)")


def test_the_default_passes_on_a_machine_without_a_gpu(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _no_gpu(monkeypatch)
    rc = cli.main(["--configfile", str(DEFAULT), "--checks", "memory,runtime,disk"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "No problems" in out and "PROBLEM" not in out
    assert "effbench.plan.finetune" not in out  # the old false alarm's "fix"
    assert "device auto is the CPU here: NVML found no GPU" in out


def test_the_default_on_a_machine_with_a_gpu_is_checked_against_it(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dev, "local_gpu", lambda: dev.LocalGpu("NVIDIA H100 80GB HBM3", 85.0, 1))
    rc = cli.main(["--configfile", str(DEFAULT), "--checks", "memory,runtime"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "device auto is the GPU here: 1 × NVIDIA H100 80GB HBM3, 85.0 GB" in out
    assert "memory   pretrain xs/mha" in out and "allowed 85 GB (fits)" in out
    assert "memory   finetune xs-gqa/synthetic/lora" in out and "memory   serve xs-gqa/int4" in out


def test_a_gpu_campaign_without_a_gpu_size_names_the_config_key_for_every_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _no_gpu(monkeypatch)  # device: cuda is not probed: the login node has no GPU of its own
    config = yaml.safe_load(DEFAULT.read_text())
    config["device"] = "cuda"
    path = tmp_path / "cuda.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["--configfile", str(path), "--checks", "memory"]) == 1
    out = capsys.readouterr().out.split("problem(s):", 1)[1]
    fixes = [line.strip() for line in out.splitlines() if line.strip().startswith("fix:")]
    assert fixes == ["fix: config key `cluster.gpu_memory_gb`"] * 3, out  # pretrain, finetune, serving
    assert "[memory] finetune: no GPU memory size given" in out
