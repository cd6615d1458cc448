"""Shared fixtures for the megatron pretraining tests (CPU, world size 1)."""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("megatron.core")

import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# megatron-core 0.16 import/build-time noise that says nothing about our code.
_MEGATRON_NOISE = (
    "ignore:.*tp_group is None:DeprecationWarning",
    "ignore:MLP requires ffn_hidden_size:DeprecationWarning",
    "ignore:.*Apex is not installed:UserWarning",
    "ignore:.*Transformer Engine and Apex are not installed:UserWarning",
    "ignore:full scope is deprecated:UserWarning",
)


def pytest_configure(config: pytest.Config) -> None:
    for line in _MEGATRON_NOISE:
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session")
def dist_env() -> Iterator[Any]:
    """torch.distributed (gloo) + megatron parallel state, once per session."""
    from effbench.pretrain.parallel import destroy, init_single_process

    # One thread: tiny matmuls gain nothing from two, and spinning OpenMP workers are
    # very slow when the two cores are shared with other jobs.
    torch.set_num_threads(1)
    torch.manual_seed(0)  # also seeds megatron's model-parallel RNG streams
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # megatron warns about missing TE/apex at import
        world_size = init_single_process()
    yield world_size
    destroy()


def _tiny_settings(**overrides: Any) -> dict[str, Any]:
    s: dict[str, Any] = dict(
        num_layers=2,
        hidden_size=256,
        num_attention_heads=4,
        ffn_hidden_size=512,
        seq_length=64,
        attention="mha",
        num_query_groups=None,
        add_qkv_bias=False,
        rotary_base=10000.0,
        normalization="RMSNorm",
        norm_epsilon=1e-6,
        tie_embeddings=False,
        init_method_std=0.02,
        params_dtype="float32",
        mla=None,
        moe=None,
    )
    s.update(overrides)
    return s


@pytest.fixture
def tiny_settings() -> Callable[..., dict[str, Any]]:
    """Factory for a tiny resolved model-settings dict (what build_gpt_model consumes)."""
    return _tiny_settings


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic corpus (vocabulary 512) for the multi-process tests."""
    from effbench.data.synthetic import make_pretraining_corpus

    d = tmp_path_factory.mktemp("data")
    make_pretraining_corpus(d, vocab_size=512, train_tokens=40_000, val_tokens=4_000, seed=3)
    return d


@pytest.fixture(scope="session")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """A gqa cell trained by two processes, full optimizer state on each: its output folder and
    the launch's output (shared by the data-parallel and the sharding tests)."""
    from effbench import config as cfg
    from launch_helpers import run, settings

    s = settings("gqa", 2)
    assert cfg.launch_command("py", s["parallel"]).startswith("py -m effbench.torchrun --standalone")
    two = tmp_path_factory.mktemp("two")
    return two, run(two, data_dir, s)
